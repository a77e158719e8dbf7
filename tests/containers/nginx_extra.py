"""A second NGINX of the stack's image with a conf.d of its own: the tests of the nginx role's
template variants (limits, maintenance) run the real image against the stack's app."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import requests
from conftest import Stack, docker


@contextlib.contextmanager
def extra_nginx(stack: Stack, suffix: str, files: dict[str, str]) -> Iterator[tuple[str, str, Path]]:
    """A second NGINX of the stack's image, on the stack's network with its own loopback
    port, serving conf.d = `files` (name -> text) mounted read-only as the role mounts it.
    Yields (container name, base URL, the conf.d directory); removed afterwards."""
    conf_dir = Path(tempfile.mkdtemp(prefix=f"{stack.prefix}-{suffix}-"))
    for name, text in files.items():
        (conf_dir / name).write_text(text)
        (conf_dir / name).chmod(0o644)
    conf_dir.chmod(0o755)
    name = f"{stack.prefix}-nginx-{suffix}"
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
                assert time.monotonic() < deadline, f"NGINX {name} did not start"
                time.sleep(0.2)
        yield name, base, conf_dir
    finally:
        docker("rm", "-fv", name, check=False)
        shutil.rmtree(conf_dir, ignore_errors=True)
