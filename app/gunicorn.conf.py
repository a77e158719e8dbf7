"""gunicorn settings. Runs in the master, so bad APP_* config exits before any fork."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from prodstack_app.config import load_config_or_exit

_cfg = load_config_or_exit()

# Import the app's modules (Flask, Werkzeug, redis, psycopg) once, in the master: every
# worker forks with them loaded instead of importing them itself, so workers boot faster
# (a recreated or restarted app answers sooner) and share those pages. Only imports:
# create_app() still runs in each worker after the fork, so pools and threads stay per
# worker (preload_app stays False).
import prodstack_app.web  # noqa: E402,F401

wsgi_app = "prodstack_app.web:create_app()"
bind = [f"0.0.0.0:{_cfg.port}"]
worker_class = "gthread"
workers = _cfg.workers
threads = _cfg.threads
timeout = 30
graceful_timeout = 10
keepalive = 5
preload_app = False  # pools and threads must be created in each worker, after fork
accesslog = None  # the app writes one JSON line per request itself
errorlog = "-"
loglevel = _cfg.log_level.lower()
capture_output = False
control_socket_disable = True  # no runtime control socket (would write under $HOME)
