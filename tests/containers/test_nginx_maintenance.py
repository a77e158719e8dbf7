"""The nginx role's maintenance switch in the real NGINX image: with the maintenance file
beside the release file, `/` and /app-health answer a JSON 503 naming the reason (with
Retry-After) while NGINX's own /health stays 200; a reload without the file serves the app
again. The restore playbook drives the same file through roles/nginx/tasks/maintenance.yml."""

from __future__ import annotations

import time

import pytest
import requests
from conftest import REPO, Stack, docker
from nginx_extra import extra_nginx

pytestmark = pytest.mark.containers


def test_maintenance_answers_json_503(stack: Stack) -> None:
    files = {
        "default.conf": (REPO / "nginx" / "default.conf").read_text(),
        "app-release.inc.maintenance": 'set $prodstack_maintenance "restore";\n',
    }
    with extra_nginx(stack, "maintenance", files) as (name, base, conf_dir):
        for path in ("/", "/app-health"):
            r = requests.get(base + path, timeout=2)
            assert r.status_code == 503, (path, r.status_code, r.text)
            assert r.headers["Content-Type"].startswith("application/json")
            assert r.json()["error"] == "maintenance" and r.json()["reason"] == "restore"
            assert r.headers["X-Prodstack-Maintenance"] == "restore"
            assert r.headers["Retry-After"] == "30"
        assert requests.get(f"{base}/health", timeout=2).status_code == 200

        (conf_dir / "app-release.inc.maintenance").unlink()
        docker("exec", name, "nginx", "-s", "reload")
        # NGINX's old workers may still take a connection or two while the new ones start:
        # maintenance has ended once five answers in a row are the app's.
        deadline = time.monotonic() + 15
        streak = 0
        while streak < 5:
            assert time.monotonic() < deadline, "maintenance did not end with the reload"
            r = requests.get(f"{base}/", timeout=5)
            served = r.status_code == 200 and "X-Prodstack-Maintenance" not in r.headers
            streak = streak + 1 if served else 0
            if not served:
                time.sleep(0.2)
