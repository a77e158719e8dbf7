"""BENCHMARK ONLY: the seed's app, served the seed's way (see Dockerfile).

Flask's development server (one process; Werkzeug's default threaded mode), and every
request to / opens a NEW Redis connection and a NEW PostgreSQL connection, then does the
same work as the real app's /: Redis INCR, a row written to PostgreSQL and read back
(count). Reads the same APP_* variables and password files as the real app.
"""

import os
import socket

import psycopg
from flask import Flask, jsonify

import redis

COUNTER_KEY = "prodstack:visits"
DDL = """
CREATE TABLE IF NOT EXISTS visits (
    id bigserial PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    hostname text
)
"""


def _secret(var: str) -> str | None:
    path = os.environ.get(var)
    if not path:
        return None
    with open(path, encoding="utf-8") as fh:
        return fh.read().strip()


TIMEOUT = float(os.environ.get("APP_DEP_TIMEOUT", "1.0"))
REDIS = {
    "host": os.environ.get("APP_REDIS_HOST", "redis"),
    "port": int(os.environ.get("APP_REDIS_PORT", "6379")),
    "db": int(os.environ.get("APP_REDIS_DB", "0")),
    "password": _secret("APP_REDIS_PASSWORD_FILE"),
    "socket_timeout": TIMEOUT,
    "socket_connect_timeout": TIMEOUT,
}
POSTGRES = {
    "host": os.environ.get("APP_POSTGRES_HOST", "postgres"),
    "port": int(os.environ.get("APP_POSTGRES_PORT", "5432")),
    "dbname": os.environ.get("APP_POSTGRES_DB", "app"),
    "user": os.environ.get("APP_POSTGRES_USER", "app"),
    "password": _secret("APP_POSTGRES_PASSWORD_FILE"),
    "connect_timeout": 2,
    "autocommit": True,
}
HOSTNAME = socket.gethostname()
_schema_ready = False  # the table is created once per process, not on every request
app = Flask(__name__)


@app.get("/health")
def health():
    return jsonify(status="ok")


@app.get("/")
def index():
    global _schema_ready
    body = {"status": "ok", "failed": [], "hostname": HOSTNAME}
    try:
        r = redis.Redis(**REDIS)
        try:
            body["visits"] = int(r.incr(COUNTER_KEY))
        finally:
            r.close()
    except Exception as exc:  # the seed degrades instead of crashing
        body["failed"].append("redis")
        body["redis_error"] = str(exc)[:200]
    try:
        with psycopg.connect(**POSTGRES) as conn:
            if not _schema_ready:
                conn.execute(DDL)
                _schema_ready = True
            row = conn.execute(
                "INSERT INTO visits (hostname) VALUES (%s) RETURNING id", (HOSTNAME,)
            ).fetchone()
            body["row_id"] = row[0]
    except Exception as exc:
        body["failed"].append("postgres")
        body["postgres_error"] = str(exc)[:200]
    if body["failed"]:
        body["status"] = "degraded"
        return jsonify(body), 503
    return jsonify(body), 200


if __name__ == "__main__":
    app.run(host="0.0.0.0", port=int(os.environ.get("APP_PORT", "5000")))
