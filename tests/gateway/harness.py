"""Real nginx running the gatewatch Kong plugin (through the PDK shim) and a Redis to feed it.

Used by the gateway tests and by `bench/gateway_latency.py`. nginx is started in the
foreground (`-g 'daemon off;'`) as a child process on free loopback ports, from the template in
`kong-http-log/harness/`; each instance has its own prefix directory (config, logs, temp files).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipeline.stack import StackError, free_port, redis_binary, stop_process, wait_for_port

__all__ = ["Nginx", "RedisServer", "lua_literal", "redis_config"]

ROOT = Path(__file__).resolve().parents[2]
KONG_DIR = ROOT / "kong-http-log"
HARNESS_DIR = KONG_DIR / "harness"
START_TIMEOUT_S = 15.0


def lua_literal(value: Any) -> str:
    """A Lua table constructor (or scalar) for a JSON-like Python value.

    >>> lua_literal({"a": [1, "x"], "b": True})
    '{["a"] = {1, "x"}, ["b"] = true}'
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid Lua string literal for ASCII text
    if isinstance(value, list | tuple):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    if isinstance(value, dict):
        items = (f"[{json.dumps(str(k))}] = {lua_literal(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"no Lua literal for {type(value).__name__}")


def redis_config(url: str, prefix: str) -> dict[str, Any]:
    """The plugin's `redis` record for a redis:// URL."""
    parts = urlsplit(url)
    conf: dict[str, Any] = {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 6379,
        "prefix": prefix,
        "database": int(parts.path.strip("/") or 0),
    }
    if parts.username:
        conf["username"] = parts.username
    if parts.password:
        conf["password"] = parts.password
    if parts.scheme == "rediss":
        conf["ssl"] = True
    return conf


@dataclass
class RedisServer:
    """A redis-server child process on a fixed loopback port; `stop()`/`start()` keep the port.

    `tls=True` serves TLS only, with a self-signed certificate for "localhost" (made with the
    openssl command line), no client certificates.
    """

    port: int = 0
    tls: bool = False
    _proc: subprocess.Popen[bytes] | None = None
    _dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def _tls_args(self, directory: Path) -> list[str]:
        cert, key = directory / "cert.pem", directory / "key.pem"
        if not cert.exists():
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                 "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                check=True, capture_output=True,
            )  # fmt: skip
        return ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(cert),
                "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
                "--tls-auth-clients", "no"]  # fmt: skip

    def start(self) -> RedisServer:
        self.port = self.port or free_port()
        self._dir = self._dir or tempfile.TemporaryDirectory(prefix="gatewatch-redis-")
        directory = Path(self._dir.name)
        listen = self._tls_args(directory) if self.tls else ["--port", str(self.port)]
        cmd = [redis_binary(), *listen, "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", str(directory)]  # fmt: skip
        self._proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
        )
        try:
            wait_for_port(self.port, self._proc, START_TIMEOUT_S)
        except StackError:
            self.close()
            raise
        return self

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc)
        self._proc = None

    def close(self) -> None:
        self.stop()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if not found:
        raise StackError("nginx not found: install nginx and libnginx-mod-http-lua")
    return found


@dataclass
class Nginx:
    """nginx with one location per route (`/<name>/`) running the plugin, plus `/base/` without.

    `routes` maps a route name to the plugin config given there, as a user would write it.
    `audit_log=True` records every `set_serialize_value` as a JSON line (see `audits()`);
    `timing=True` times each access phase in nginx, reported (and reset) by GET /__timing.
    """

    routes: dict[str, dict[str, Any]]
    workers: int = 2
    log_level: str = "info"
    dict_size: str = "32m"
    audit_log: bool = True
    timing: bool = False
    port: int = 0
    echo_port: int = 0
    prefix: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="gatewatch-nginx-")))
    _proc: subprocess.Popen[bytes] | None = None

    def url(self, route: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{route}/{path}"

    def render(self) -> str:
        location = (HARNESS_DIR / "location.conf.tmpl").read_text()
        audit = (
            'log_by_lua_block { require("kong_pdk_shim").log() }\n'
            f"      access_log {self.prefix}/audit.log gatewatch if=$gatewatch_log;"
            if self.audit_log
            else ""
        )
        access_module = "access_timing" if self.timing else "kong_pdk_shim"
        locations = "".join(
            location.replace("@@NAME@@", name)
            .replace("@@AUDIT@@", audit)
            .replace("@@ACCESS_MODULE@@", access_module)
            for name in self.routes
        )
        report = 'content_by_lua_block { require("access_timing").report() }'
        timing = f"    location = /__timing {{ {report} }}" if self.timing else ""
        values = {
            "USER": "user root;" if os.geteuid() == 0 else "",
            "WORKERS": str(self.workers),
            "PREFIX": str(self.prefix),
            "LOG_LEVEL": self.log_level,
            "PLUGIN_ROOT": str(KONG_DIR),
            "HARNESS": str(HARNESS_DIR),
            "DICT_SIZE": self.dict_size,
            "ROUTES": lua_literal(self.routes),
            "ECHO_PORT": str(self.echo_port),
            "PORT": str(self.port),
            "LOCATIONS": locations,
            "TIMING": timing,
        }
        text = (HARNESS_DIR / "nginx.conf.tmpl").read_text()
        for key, value in values.items():
            text = text.replace(f"@@{key}@@", value)
        return text

    def start(self) -> Nginx:
        self.port = self.port or free_port()
        self.echo_port = self.echo_port or free_port()
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.prefix / "tmp" / sub).mkdir(parents=True, exist_ok=True)
        conf = self.prefix / "nginx.conf"
        conf.write_text(self.render())
        with open(self.prefix / "stderr.log", "wb") as stderr:
            self._proc = subprocess.Popen(
                [nginx_binary(), "-p", str(self.prefix), "-c", str(conf), "-g", "daemon off;"],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
            )
        try:
            wait_for_port(self.port, self._proc, START_TIMEOUT_S)
            wait_for_port(self.echo_port, self._proc, START_TIMEOUT_S)
        except StackError as exc:
            log = self.error_log()[-4000:]
            self.close()
            raise StackError(f"{exc}\n{log}") from exc
        return self

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc)
        self._proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.prefix, ignore_errors=True)

    def error_log(self) -> str:
        text = ""
        for name in ("stderr.log", "error.log"):
            path = self.prefix / name
            if path.exists():
                text += path.read_text(errors="replace")
        return text

    def audits(self) -> list[dict[str, Any]]:
        """The `gatewatch` serialize values logged so far, oldest first."""
        path = self.prefix / "audit.log"
        if not path.exists():
            return []
        lines = path.read_text().splitlines()
        return [json.loads(line)["gatewatch"] for line in lines if line.strip()]
