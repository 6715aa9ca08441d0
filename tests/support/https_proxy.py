"""The HTTPS entrypoint (proxy/Caddyfile, run by Debian's Caddy) in front of services the test
started, with a throwaway self-signed certificate from files."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.procs import PROJECT_ROOT, Proc, free_port, start, wait_until

CADDYFILE = PROJECT_ROOT / "proxy" / "Caddyfile"
OPERATOR = "operator"


@dataclass
class HttpsProxy:
    url: str  # https://localhost:PORT
    http_url: str  # http://localhost:PORT (redirects)
    cert: Path
    operator_password: str
    proc: Proc

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=str(self.cert), timeout=30, **kwargs)


def self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "tls.crt", directory / "tls.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def start_https_proxy(workdir: Path, upstreams: dict[str, str], operator_password: str) -> HttpsProxy:
    """Caddy on two free ports of 127.0.0.1; `upstreams` maps STREAMLIT/BACKEND/... to host:port."""
    caddy = shutil.which("caddy")
    if caddy is None:
        raise RuntimeError("Debian's caddy is not on PATH; `make install` (scripts/install.sh) installs it")
    workdir.mkdir(parents=True, exist_ok=True)
    cert, key = self_signed(workdir)
    password_hash = subprocess.run(
        [caddy, "hash-password", "--plaintext", operator_password], check=True, capture_output=True, text=True
    ).stdout.strip()
    https_port, http_port = free_port(), free_port()
    env = {
        "SITE_ADDRESS": f"localhost:{https_port}",
        "BIND_HOST": "127.0.0.1",
        # The site's own port, not https_port: Caddy leaves https_port out of its redirects,
        # assuming it is what clients see (443 in production).
        "HTTP_PORT": str(http_port),
        "TLS_MODE": "files",
        "TLS_CERT_FILE": str(cert),
        "TLS_KEY_FILE": str(key),
        "OPERATOR_PASSWORD_HASH": password_hash,
        "XDG_DATA_HOME": str(workdir / "data"),
        "XDG_CONFIG_HOME": str(workdir / "config"),
        **{f"{name}_UPSTREAM": address for name, address in upstreams.items()},
    }
    proc = start(
        f"caddy-{https_port}", [caddy, "run", "--config", str(CADDYFILE), "--adapter", "caddyfile"], env, workdir
    )
    url, http_url = f"https://localhost:{https_port}", f"http://localhost:{http_port}"
    proxy = HttpsProxy(url, http_url, cert, operator_password, proc)
    try:
        wait_until(lambda: proxy.client().get("/api/health").status_code == 200, 30, "the HTTPS proxy", proc)
    except BaseException:
        proc.stop()
        raise
    return proxy
