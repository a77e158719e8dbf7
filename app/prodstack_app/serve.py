"""The container's entry point: check the APP_* settings, then become Granian.

Bad configuration exits here with one line naming the variable, before any worker starts.
Then the process replaces itself with Granian (same PID, so Docker's init and the signals
it forwards reach Granian directly). Granian runs create_app() in each worker, after the
fork, so connection pools and threads are per worker.

Why Granian rather than gunicorn's gthread workers: its HTTP handling is Rust, so each
worker's Python threads only run the app. Measured on 2 cores against the app container
directly (wrk, 16 connections): /health 4,000-4,600 req/s against gthread's 2,600, and /
1,120-1,160 against 1,020 with everything else equal.
"""

from __future__ import annotations

import os
import sys

from .config import Config, load_config_or_exit

APP_TARGET = "prodstack_app.web:create_app"
# Seconds a stopping worker gets to finish its requests before it is killed; the app role's
# app_stop_timeout (Docker's SIGTERM-to-SIGKILL) must stay above it.
GRACEFUL_SECONDS = 10
# Granian's own log lines as JSON through the app's formatter: every stdout line is JSON.
LOG_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "granian-logging.json")


def granian_argv(cfg: Config, executable: str = sys.executable) -> list[str]:
    """Granian's command line for this configuration (the granian next to this Python)."""
    granian = os.path.join(os.path.dirname(executable), "granian")
    return [
        granian if os.path.exists(granian) else "granian",
        "--interface", "wsgi",
        "--factory",  # APP_TARGET is a function returning the WSGI app
        "--host", "0.0.0.0",  # noqa: S104 (the container's own network namespace)
        "--port", str(cfg.port),
        "--http", "1",  # NGINX speaks HTTP/1.1 to it, with keep-alive
        "--no-ws",
        "--workers", str(cfg.workers),
        "--blocking-threads", str(cfg.threads),
        # A worker that dies is started again (the app must never stay down).
        "--respawn-failed-workers",
        "--workers-kill-timeout", str(GRACEFUL_SECONDS),
        "--log-level", cfg.log_level.lower(),
        "--log-config", LOG_CONFIG,
        "--no-access-log",  # NGINX logs every request; the app logs failures (APP_ACCESS_LOG)
        APP_TARGET,
    ]  # fmt: skip


def main() -> None:
    cfg = load_config_or_exit()
    argv = granian_argv(cfg)
    sys.stdout.flush()
    os.execvp(argv[0], argv)  # noqa: S606 (a fixed command line, no shell)


if __name__ == "__main__":
    main()
