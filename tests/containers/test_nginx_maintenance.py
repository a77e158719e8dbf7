"""The nginx role's maintenance switch in the real NGINX image: with the maintenance file
beside the release file, `/` and /app-health answer a JSON 503 naming the reason (with
Retry-After) while NGINX's own /health stays 200; a reload without the file serves the app
again. The restore playbook drives the same file through roles/nginx/tasks/maintenance.yml."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest
import requests
from conftest import REPO, Stack, docker

pytestmark = pytest.mark.containers


def test_maintenance_answers_json_503(stack: Stack) -> None:
    conf_dir = Path(tempfile.mkdtemp(prefix=f"{stack.prefix}-maintenance-"))
    (conf_dir / "default.conf").write_text((REPO / "nginx" / "default.conf").read_text())
    flag = conf_dir / "app-release.inc.maintenance"
    flag.write_text('set $prodstack_maintenance "restore";\n')
    conf_dir.chmod(0o755)
    for f in conf_dir.iterdir():
        f.chmod(0o644)
    name = f"{stack.prefix}-nginx-maintenance"
    try:
        docker(
            "run", "-d", "--init", "--name", name, "--network", stack.net, "-p", "127.0.0.1::8080",
            "-v", f"{conf_dir}:/etc/nginx/conf.d:ro", stack.images["nginx"],
        )  # fmt: skip
        port = docker("port", name, "8080/tcp").stdout.split()[0].rpartition(":")[2]
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while True:
            try:
                requests.get(f"{base}/health", timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "NGINX did not start"
                time.sleep(0.2)
        for path in ("/", "/app-health"):
            r = requests.get(base + path, timeout=2)
            assert r.status_code == 503, (path, r.status_code, r.text)
            assert r.headers["Content-Type"].startswith("application/json")
            assert r.json()["error"] == "maintenance" and r.json()["reason"] == "restore"
            assert r.headers["X-Prodstack-Maintenance"] == "restore"
            assert r.headers["Retry-After"] == "30"
        assert requests.get(f"{base}/health", timeout=2).status_code == 200

        flag.unlink()
        docker("exec", name, "nginx", "-s", "reload")
        deadline = time.monotonic() + 15
        while requests.get(f"{base}/", timeout=5).status_code == 503:
            assert time.monotonic() < deadline, "maintenance did not end with the reload"
            time.sleep(0.2)
        r = requests.get(f"{base}/", timeout=5)
        assert r.status_code == 200 and "X-Prodstack-Maintenance" not in r.headers, r.text
    finally:
        docker("rm", "-fv", name, check=False)
        shutil.rmtree(conf_dir, ignore_errors=True)
