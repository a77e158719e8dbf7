"""The nginx role's ACME pieces that need no host: the challenge location in the template,
and the deploy hook's decision (nothing to do, or what it would install) in check mode."""

from __future__ import annotations

import datetime
import hashlib
import importlib.util
import json
import os
from pathlib import Path
from types import ModuleType

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parents[2]
LOCATION = "location ^~ /.well-known/acme-challenge/"


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem.replace("-", "_"), path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def servers(**overrides: object) -> list[str]:
    """The rendered server blocks (HTTP first, then HTTPS when TLS is on)."""
    conf = str(load(ROOT / "scripts" / "render-nginx-default.py").render(**overrides))
    return conf.split("\nserver {")[1:]


def test_challenge_location_only_with_acme_and_only_on_http() -> None:
    assert not any(LOCATION in s for s in servers(nginx_tls_enabled=True))
    http, https = servers(nginx_tls_enabled=True, nginx_tls_acme_enabled=True)
    assert http.count(LOCATION) == 1 and "root /var/www/acme;" in http
    assert "acme-challenge" not in https


def certificate() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acme.prodstack.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), pem


@pytest.fixture
def hook(tmp_path: Path) -> tuple[ModuleType, dict[str, object]]:
    cfg = {
        "lineage": str(tmp_path / "live"),
        "tls_dir": str(tmp_path / "tls"),
        "uid": os.getuid(),
        "container_filter": "label=prodstack.role=none",
    }
    (tmp_path / "live").mkdir()
    (tmp_path / "tls").mkdir()
    return load(ROOT / "roles" / "nginx" / "files" / "prodstack-acme-deploy.py"), cfg


def test_hook_check_mode_says_what_it_would_do(hook: tuple[ModuleType, dict[str, object]]) -> None:
    module, cfg = hook
    live, tls = Path(str(cfg["lineage"])), Path(str(cfg["tls_dir"]))
    assert "no certificate" in module.deploy(cfg, check=True)
    chain, key = certificate()
    (live / "fullchain.pem").write_bytes(chain)
    (live / "privkey.pem").write_bytes(key)
    der = x509.load_pem_x509_certificate(chain).public_bytes(serialization.Encoding.DER)
    short = hashlib.sha256(der).hexdigest()[:16]
    assert module.deploy(cfg, check=True).startswith(f"would install certificate {short}")
    assert not (tls / "tls.crt").exists()  # check mode wrote nothing
    (tls / "tls.crt").write_bytes(chain)
    (tls / "tls.key").write_bytes(key)
    assert module.deploy(cfg, check=True).startswith("unchanged")
    assert module.main(["--config", "/nonexistent", "--check"]) == 1
    (live.parent / "cfg.json").write_text(json.dumps(cfg))
    assert module.main(["--config", str(live.parent / "cfg.json"), "--check"]) == 0
