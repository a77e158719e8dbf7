"""The nginx role's template with per-client limits turned on, run in the real NGINX image:
a client over the rate gets NGINX's JSON 429, one within it is served, and NGINX's own
/health (answered before the limits apply) is never throttled."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from conftest import REPO, Stack, load_script
from nginx_extra import extra_nginx

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
    with extra_nginx(stack, "limits", {"default.conf": rendered_with_limits()}) as (_, base, _dir):
        url = f"{base}/"  # proxied to the stack's app; /health is answered before limits apply
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
