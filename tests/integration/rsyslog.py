"""A real rsyslogd receiving CEF, as a test fixture: plain TCP, TLS (GnuTLS: one port requiring a
client certificate from the test CA, one anonymous) and UDP, each message parsed by mmnormalize
with liblognorm's `%cef%` and written as one JSON line (the parse result plus the syslog header
rsyslog read). Debian packages: rsyslog (imtcp, imudp, mmnormalize), rsyslog-gnutls."""

from __future__ import annotations

import asyncio
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.stack import free_port, stop_process

__all__ = ["Pki", "Rsyslog", "make_pki"]

RULEBASE = "version=2\nrule=:%cef:cef%\n"

# Every field as JSON; `$!` is mmnormalize's result: {"cef": {...}} or, when %cef% did not match,
# {"originalmsg", "unparsed-data"}.
FIELDS = {
    "input": 'name="inputname"',
    "pri": 'name="pri"',
    "time": 'name="timereported" dateFormat="rfc3339"',
    "hostname": 'name="hostname"',
    "app": 'name="app-name"',
    "procid": 'name="procid"',
    "msgid": 'name="msgid"',
}
TEMPLATE = (
    'template(name="cefjson" type="list") {\n'
    + "".join(
        f'  constant(value="{"{" if i == 0 else ","}\\"{key}\\":\\"") '
        f'property({prop} format="json") constant(value="\\"")\n'
        for i, (key, prop) in enumerate(FIELDS.items())
    )
    + '  constant(value=",\\"parsed\\":") property(name="$!")\n'
    + '  constant(value="}\\n")\n}\n'
)


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here: verifying against it must fail


def make_pki(d: Path) -> Pki:
    """A throwaway CA, a server certificate for 127.0.0.1, a client certificate, another CA."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, cwd=d, capture_output=True)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    for ca in ("ca", "other-ca"):
        openssl(
            "req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "2",
            "-subj", f"/CN=gatewatch test {ca}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
    for name, ext in (
        ("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ):
        (d / f"{name}.ext").write_text(ext)
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
        )  # fmt: skip
    return Pki(
        d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key",
        d / "other-ca.pem",
    )  # fmt: skip


@dataclass
class Rsyslog:
    workdir: Path
    pki: Pki
    tcp: int = field(default_factory=free_port)
    tls: int = field(default_factory=free_port)  # client certificate from the CA required
    tls_anon: int = field(default_factory=free_port)  # server certificate only
    udp: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def out(self) -> Path:
        return self.workdir / "cef.jsonl"

    def config(self) -> str:
        tls = (
            'streamDriver.name="gtls" streamDriver.mode="1" '
            f'streamDriver.CAFile="{self.pki.ca}" streamDriver.CertFile="{self.pki.server_cert}" '
            f'streamDriver.KeyFile="{self.pki.server_key}"'
        )
        local = 'address="127.0.0.1" ruleset="cef"'
        return (
            f'global(workDirectory="{self.workdir / "spool"}")\n'
            'module(load="imtcp")\nmodule(load="imudp")\nmodule(load="mmnormalize")\n'
            f'input(type="imtcp" name="tcp" port="{self.tcp}" {local})\n'
            f'input(type="imtcp" name="tls" port="{self.tls}" {local} {tls} '
            'streamDriver.authMode="x509/certvalid")\n'
            f'input(type="imtcp" name="tls-anon" port="{self.tls_anon}" {local} {tls} '
            'streamDriver.authMode="anon")\n'
            f'input(type="imudp" name="udp" port="{self.udp}" {local})\n'
            + TEMPLATE
            + 'ruleset(name="cef") {\n'
            f'  action(type="mmnormalize" ruleBase="{self.workdir / "cef.rb"}")\n'
            f'  action(type="omfile" file="{self.out}" template="cefjson")\n'
            "}\n"
        )

    async def start(self) -> None:
        self._spawn()
        for port in (self.tcp, self.tls, self.tls_anon):
            await self._wait_listening(port)

    def _spawn(self) -> None:
        (self.workdir / "spool").mkdir(exist_ok=True)
        (self.workdir / "cef.rb").write_text(RULEBASE)
        conf = self.workdir / "rsyslog.conf"
        conf.write_text(self.config())
        with open(self.workdir / "rsyslogd.log", "ab") as log:
            self.proc = subprocess.Popen(
                ["rsyslogd", "-n", "-f", str(conf), "-i", str(self.workdir / "rsyslogd.pid")],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def log(self) -> str:
        return (self.workdir / "rsyslogd.log").read_text(errors="replace")

    async def _wait_listening(self, port: int, timeout_s: float = 15) -> None:
        assert self.proc is not None
        async with asyncio.timeout(timeout_s):
            while True:
                assert self.proc.poll() is None, f"rsyslogd exited: {self.log()}"
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    await asyncio.sleep(0.05)  # a port has no readiness event to await
                    continue
                writer.close()
                await writer.wait_closed()
                return

    def records(self) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        # Only complete lines (rsyslog may be mid-write), split on LF alone: U+2028 is data.
        return [json.loads(line) for line in self.out.read_bytes().split(b"\n")[:-1]]

    async def wait_for(self, ids: set[str], timeout_s: float = 20) -> dict[str, dict[str, Any]]:
        """The parsed records whose CEF externalId is in `ids`, once all of them arrived (rsyslog
        writes the file; there is no event to await but its content)."""
        found: dict[str, dict[str, Any]] = {}
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    found = {
                        ext["externalId"]: r
                        for r in self.records()
                        if (ext := r["parsed"].get("cef", {}).get("Extensions", {}))
                        and ext.get("externalId") in ids
                    }
                    if found.keys() >= ids:
                        return found
                    await asyncio.sleep(0.05)
        except TimeoutError:
            unparsed = [r for r in self.records() if "cef" not in r["parsed"]]
            raise AssertionError(
                f"rsyslog got {len(found)}/{len(ids)}; unparsed: {unparsed[:3]}; log: {self.log()}"
            ) from None
