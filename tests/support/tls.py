"""TLS for tests: certificates made with the `openssl` command, and a redis-server that speaks
only TLS (``--port 0 --tls-port N``) on a free port, never 6379."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .redis_proc import RedisProcess

LOOPBACK_NAMES = "IP:127.0.0.1,DNS:localhost"
_CURVE = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]  # fast to generate
# What strict verifiers (Python >= 3.13 sets VERIFY_X509_STRICT) insist on.
_LEAF_EXTENSIONS = """basicConstraints = critical, CA:FALSE
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = {usage}
"""


def openssl() -> str:
    """The openssl command; the TLS tests need it (.ci/run installs it)."""
    found = shutil.which("openssl")
    if not found:
        raise RuntimeError("the TLS tests need the `openssl` command on PATH (apt-get install openssl)")
    return found


@dataclass(frozen=True)
class Certificates:
    """A CA, a server certificate signed by it, and a client certificate signed by it."""

    dir: Path

    ca = property(lambda self: self.dir / "ca.crt")
    ca_key = property(lambda self: self.dir / "ca.key")
    server_cert = property(lambda self: self.dir / "server.crt")
    server_key = property(lambda self: self.dir / "server.key")
    client_cert = property(lambda self: self.dir / "client.crt")
    client_key = property(lambda self: self.dir / "client.key")


def make_certificates(directory: Path, server_names: str = LOOPBACK_NAMES) -> Certificates:
    """A fresh CA in ``directory`` and the two certificates it signs; ``server_names`` is the
    server certificate's subjectAltName (a name the client does not dial makes a mismatch)."""
    directory.mkdir(parents=True, exist_ok=True)
    certs = Certificates(directory)
    _run("req", "-x509", "-new", "-nodes", *_CURVE, "-days", "2", "-subj", "/CN=reaper test CA",
         "-keyout", certs.ca_key, "-out", certs.ca,
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _sign(certs, "server", "serverAuth", f"subjectAltName = {server_names}\n")
    _sign(certs, "client", "clientAuth", "")
    return certs


def _sign(certs: Certificates, name: str, usage: str, extra: str) -> None:
    key, request, cert = (certs.dir / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
    extensions = certs.dir / f"{name}.ext"
    extensions.write_text(_LEAF_EXTENSIONS.format(usage=usage) + extra)
    _run("req", "-new", "-nodes", *_CURVE, "-subj", f"/CN=reaper test {name}", "-keyout", key, "-out", request)
    _run("x509", "-req", "-in", request, "-CA", certs.ca, "-CAkey", certs.ca_key, "-set_serial",
         str(secrets.randbelow(2**62) + 1), "-days", "2", "-extfile", extensions, "-out", cert)


def encrypt_key(key: Path, out: Path, passphrase: str = "s3cret") -> Path:
    """The same private key, encrypted with ``passphrase`` (reaper refuses it: no prompt)."""
    _run("pkey", "-in", key, "-aes256", "-passout", f"pass:{passphrase}", "-out", out)
    return out


def _run(*args) -> None:
    done = subprocess.run([openssl(), *map(str, args)], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(map(str, args))} failed:\n{done.stderr}")


def server_tls_args(certs: Certificates, port: int, auth_clients: bool) -> list[str]:
    """redis-server (or sentinel) arguments: TLS on ``port``, no plain TCP port."""
    return ["--port", "0", "--tls-port", str(port),
            "--tls-cert-file", str(certs.server_cert), "--tls-key-file", str(certs.server_key),
            "--tls-ca-cert-file", str(certs.ca),
            "--tls-auth-clients", "yes" if auth_clients else "no"]


def client_tls_kwargs(certs: Certificates) -> dict:
    """redis-py arguments of a test's own client: trusts the CA, shows the client certificate,
    and reaches a server whose certificate names another host (checking names is reaper's job)."""
    return {"ssl": True, "ssl_ca_certs": str(certs.ca), "ssl_certfile": str(certs.client_cert),
            "ssl_keyfile": str(certs.client_key), "ssl_check_hostname": False}


class TlsRedisProcess(RedisProcess):
    """A redis-server that accepts only TLS connections; ``auth_clients`` also demands a
    client certificate signed by the CA."""

    def __init__(self, certs: Certificates, *, auth_clients: bool = False, **kw) -> None:
        super().__init__(**kw)
        self.certs, self.auth_clients = certs, auth_clients

    @property
    def url(self) -> str:
        return f"rediss://{self.host}:{self.port}/0"

    def client(self, **kw):
        for name, value in client_tls_kwargs(self.certs).items():
            kw.setdefault(name, value)
        return super().client(**kw)

    def _command(self) -> list[str]:
        # The later --port 0 wins over the base class's plain port.
        return [*super()._command(), *server_tls_args(self.certs, self.port, self.auth_clients)]
