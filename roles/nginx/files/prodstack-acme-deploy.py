#!/usr/bin/python3
"""Installs the certificate certbot holds for the stack into the directory NGINX reads, and
reloads NGINX (never a restart, so no connection is dropped).

    prodstack-acme-deploy [--config FILE] [--check]

certbot runs it as the deploy hook after each issue and renewal; the nginx role runs it at
every converge (--check in check mode). It does nothing when NGINX's files already hold
certbot's current certificate and key, so it is safe to run any number of times. Before the
reload `nginx -t` must accept the new files; if it does not, the previous files are put back
and the run fails: NGINX keeps serving what it had. NGINX is found by its label; when it is
not running, the files are all there is to do (it reads them when it starts).

Settings come from a JSON file the role writes: the certbot lineage (live/NAME), the TLS
directory, the UID NGINX runs as (owner of the key) and the `docker ps` filter that finds
NGINX. Output: one line saying what was done; exit 1 with the reason on failure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

CONFIG = "/etc/prodstack/nginx/acme-deploy.json"


def fingerprint(pem: bytes) -> str:
    """SHA-256 of the first certificate in a PEM chain (as `openssl x509 -fingerprint`)."""
    text = pem.decode()
    end = "-----END CERTIFICATE-----"
    der = ssl.PEM_cert_to_DER_cert(text[: text.index(end) + len(end)])
    return hashlib.sha256(der).hexdigest()


def write(path: Path, data: bytes, uid: int, mode: int) -> None:
    """Write beside `path`, then rename over it: NGINX never reads a half-written file."""
    tmp = path.with_name(f".{path.name}.new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chown(tmp, uid, uid)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def docker(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *argv], capture_output=True, text=True, timeout=60, check=False)


def deploy(cfg: dict[str, Any], check: bool) -> str:
    lineage = Path(cfg["lineage"])
    tls = Path(cfg["tls_dir"])
    uid = int(cfg["uid"])
    if not (lineage / "fullchain.pem").exists():
        return f"no certificate in {lineage} yet: nothing to install"
    chain = (lineage / "fullchain.pem").read_bytes()
    key = (lineage / "privkey.pem").read_bytes()
    crt_path, key_path = tls / "tls.crt", tls / "tls.key"
    old_chain = crt_path.read_bytes() if crt_path.exists() else b""
    old_key = key_path.read_bytes() if key_path.exists() else b""
    new = fingerprint(chain)
    if (chain, key) == (old_chain, old_key):
        return f"unchanged: NGINX's certificate is certbot's current one ({new[:16]})"
    if check:
        return f"would install certificate {new[:16]} into {tls} and reload NGINX"

    tls.mkdir(mode=0o755, parents=True, exist_ok=True)
    write(crt_path, chain, 0, 0o644)
    write(key_path, key, uid, 0o400)
    found = docker("ps", "-q", "--filter", cfg["container_filter"], "--filter", "status=running")
    containers = found.stdout.split()
    if found.returncode != 0 or not containers:
        return (
            f"installed certificate {new[:16]} into {tls}; NGINX is not running (it reads it when it starts)"
        )
    (container,) = containers[:1]
    tested = docker("exec", container, "nginx", "-t", "-q")
    if tested.returncode != 0:
        # Put back what NGINX serves now, so a later start or reload cannot pick up files
        # it rejects.
        if old_chain:
            write(crt_path, old_chain, 0, 0o644)
            write(key_path, old_key, uid, 0o400)
        raise RuntimeError(
            f"NGINX rejects certificate {new[:16]}, previous files put back: {tested.stderr.strip()}"
        )
    reloaded = docker("exec", container, "nginx", "-s", "reload")
    if reloaded.returncode != 0:
        raise RuntimeError(
            f"installed certificate {new[:16]} but the reload failed: {reloaded.stderr.strip()}"
        )
    return f"installed certificate {new[:16]} into {tls} and reloaded NGINX ({container[:12]})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=CONFIG)
    parser.add_argument("--check", action="store_true", help="say what would be done, change nothing")
    args = parser.parse_args(argv)
    try:
        cfg = json.loads(Path(args.config).read_text())
        print(f"prodstack-acme-deploy: {deploy(cfg, args.check)}")
    except (OSError, ValueError, KeyError, RuntimeError, subprocess.SubprocessError) as exc:
        print(f"prodstack-acme-deploy: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
