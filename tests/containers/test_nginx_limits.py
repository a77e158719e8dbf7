"""The nginx role's template with per-client limits turned on, run in the real NGINX image:
a client over the rate gets NGINX's JSON 429, one within it is served, and NGINX's own
/health (answered before the limits apply) is never throttled."""

from __future__ import annotations

import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from conftest import REPO, Stack, docker, load_script

pytestmark = pytest.mark.containers


def rendered_with_limits() -> str:
    return str(
        load_script(REPO / "scripts" / "render-nginx-default.py").render(
            nginx_rate_limit_enabled=True,
            nginx_rate_limit_per_second=2,
            nginx_rate_limit_burst=3,
        )
    )


def test_rate_limit_answers_json_429(stack: Stack) -> None:
    conf_dir = Path(tempfile.mkdtemp(prefix=f"{stack.prefix}-limits-"))
    (conf_dir / "default.conf").write_text(rendered_with_limits())
    conf_dir.chmod(0o755)
    (conf_dir / "default.conf").chmod(0o644)
    name = f"{stack.prefix}-nginx-limits"
    try:
        docker(
            "run", "-d", "--init", "--name", name, "--network", stack.net, "-p", "127.0.0.1::8080",
            "-v", f"{conf_dir}:/etc/nginx/conf.d:ro", stack.images["nginx"],
        )  # fmt: skip
        port = docker("port", name, "8080/tcp").stdout.split()[0].rpartition(":")[2]
        base = f"http://127.0.0.1:{port}"
        url = f"{base}/"  # proxied to the stack's app; /health is answered before limits apply
        deadline = time.monotonic() + 15
        while True:
            try:
                requests.get(url, timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "NGINX with limits did not start"
                time.sleep(0.2)
        time.sleep(1.5)  # let the bucket refill after the start-up probe
        # 20 at once: far over 1 r/s with a burst of 2, however slow this machine is.
        with ThreadPoolExecutor(max_workers=20) as pool:
            statuses = list(pool.map(lambda _: requests.get(url, timeout=5), range(20)))
        codes = [r.status_code for r in statuses]
        assert codes.count(200) >= 1, codes
        limited = [r for r in statuses if r.status_code == 429]
        assert limited, codes
        assert limited[0].headers["Content-Type"].startswith("application/json")
        assert limited[0].json()["error"] == "too many requests"
        assert requests.get(f"{base}/health", timeout=2).status_code == 200  # never throttled
        time.sleep(3)
        assert requests.get(url, timeout=2).status_code == 200  # within the rate again
    finally:
        docker("rm", "-fv", name, check=False)
        shutil.rmtree(conf_dir, ignore_errors=True)
