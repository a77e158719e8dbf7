"""Configuration from APP_* environment variables, validated once at start.

Every problem is reported as a single line naming the variable, e.g.
``config error: APP_REDIS_PORT must be an integer in 1..65535, got 'abc'``.
Passwords are only ever read from files, never from the environment itself.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NoReturn

from . import __version__

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MAX_WORKERS_DEFAULT = 8


class ConfigError(ValueError):
    """A single, human readable configuration problem."""


@dataclass(frozen=True)
class Config:
    port: int = 5000
    workers: int = 2
    threads: int = 8
    redis_host: str = "redis"
    redis_port: int = 6379
    redis_db: int = 0
    redis_password: str | None = field(default=None, repr=False)
    postgres_host: str = "postgres"
    postgres_port: int = 5432
    postgres_db: str = "app"
    postgres_user: str = "app"
    postgres_password: str | None = field(default=None, repr=False)
    dep_timeout: float = 1.0
    request_deadline: float = 1.8
    log_level: str = "INFO"
    access_log: bool = False
    version: str = __version__


def default_workers(cpus: int | None = None) -> int:
    """One Granian worker per CPU (its I/O runs in Rust threads, so more processes only add
    GIL contention: 2 beat 3, 4 and 5 on 2 cores), capped so a big host does not spawn dozens."""
    n = cpus if cpus is not None else (os.cpu_count() or 1)
    return max(1, min(n, MAX_WORKERS_DEFAULT))


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip(), 10)
    except ValueError:
        value = None
    if value is None or not lo <= value <= hi:
        raise ConfigError(f"{name} must be an integer in {lo}..{hi}, got {raw!r}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, hi: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0 < value <= hi:
        raise ConfigError(f"{name} must be a number of seconds > 0 and <= {hi:g}, got {raw!r}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value not in ("0", "1", "true", "false"):
        raise ConfigError(f"{name} must be 0, 1, true or false, got {raw!r}")
    return value in ("1", "true")


def _str(env: Mapping[str, str], name: str, default: str, max_len: int = 255) -> str:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip()
    if not value or len(value) > max_len or any(c.isspace() for c in value):
        raise ConfigError(
            f"{name} must be a non-empty string without whitespace "
            f"(max {max_len} chars), got {raw!r}"
        )
    return value


def _password_file(env: Mapping[str, str], name: str) -> str | None:
    path = env.get(name)
    if path is None or path.strip() == "":
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            secret = fh.read().strip()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"{name} must name a readable file, got {path!r} ({reason})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{name} must name a UTF-8 text file, got {path!r}") from None
    if not secret:
        raise ConfigError(f"{name} points to an empty file: {path!r}")
    return secret


def load_config(env: Mapping[str, str] | None = None) -> Config:
    """Parse and validate the configuration; raise ConfigError on the first problem."""
    e = os.environ if env is None else env
    for forbidden in ("APP_REDIS_PASSWORD", "APP_POSTGRES_PASSWORD"):
        if forbidden in e:
            raise ConfigError(
                f"{forbidden} is not supported: put the password in a file and set {forbidden}_FILE"
            )
    log_level = e.get("APP_LOG_LEVEL", "INFO").strip().upper()
    if log_level not in LOG_LEVELS:
        raise ConfigError(
            f"APP_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {e.get('APP_LOG_LEVEL')!r}"
        )
    dep_timeout = _float(e, "APP_DEP_TIMEOUT", 1.0, 10.0)
    request_deadline = _float(e, "APP_REQUEST_DEADLINE", 1.8, 30.0)
    return Config(
        port=_int(e, "APP_PORT", 5000, 1, 65535),
        workers=_int(e, "APP_WORKERS", default_workers(), 1, 64),
        threads=_int(e, "APP_THREADS", 8, 1, 64),
        redis_host=_str(e, "APP_REDIS_HOST", "redis"),
        redis_port=_int(e, "APP_REDIS_PORT", 6379, 1, 65535),
        redis_db=_int(e, "APP_REDIS_DB", 0, 0, 15),
        redis_password=_password_file(e, "APP_REDIS_PASSWORD_FILE"),
        postgres_host=_str(e, "APP_POSTGRES_HOST", "postgres"),
        postgres_port=_int(e, "APP_POSTGRES_PORT", 5432, 1, 65535),
        postgres_db=_str(e, "APP_POSTGRES_DB", "app", 63),
        postgres_user=_str(e, "APP_POSTGRES_USER", "app", 63),
        postgres_password=_password_file(e, "APP_POSTGRES_PASSWORD_FILE"),
        dep_timeout=dep_timeout,
        request_deadline=request_deadline,
        log_level=log_level,
        access_log=_bool(e, "APP_ACCESS_LOG", False),
        version=_str(e, "APP_VERSION", __version__, 128),
    )


def load_config_or_exit(env: Mapping[str, str] | None = None) -> Config:
    """For process entry points: one clear line on stderr and exit 2 on bad config."""
    try:
        return load_config(env)
    except ConfigError as exc:
        fail(str(exc))


def fail(message: str) -> NoReturn:
    print(f"config error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)
