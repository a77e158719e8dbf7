"""gunicorn settings. Runs in the master, so bad APP_* config exits before any fork."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from prodstack_app.config import load_config_or_exit

_cfg = load_config_or_exit()

wsgi_app = "prodstack_app.web:create_app()"
bind = [f"0.0.0.0:{_cfg.port}"]
worker_class = "sync"
workers = _cfg.workers
threads = 1  # lever: sync workers (APP_THREADS still sizes the pools)
timeout = 30
graceful_timeout = 10
keepalive = 5
preload_app = False  # pools and threads must be created in each worker, after fork
accesslog = None  # the app writes one JSON line per request itself
errorlog = "-"
loglevel = _cfg.log_level.lower()
capture_output = False
control_socket_disable = True  # no runtime control socket (would write under $HOME)
