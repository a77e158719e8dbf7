"""Unit tests of configuration parsing (pure logic, no servers)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from prodstack_app import __version__
from prodstack_app.config import ConfigError, default_workers, load_config
from prodstack_app.deps import Deadline, describe_error
from prodstack_app.serve import granian_argv
from prodstack_app.web import request_id_from


def test_defaults() -> None:
    cfg = load_config({})
    assert cfg.port == 5000
    assert cfg.threads == 8
    assert cfg.workers == default_workers()
    assert (cfg.redis_host, cfg.redis_port, cfg.redis_db) == ("redis", 6379, 0)
    assert (cfg.postgres_host, cfg.postgres_port) == ("postgres", 5432)
    assert (cfg.postgres_db, cfg.postgres_user) == ("app", "app")
    assert cfg.redis_password is None and cfg.postgres_password is None
    assert cfg.dep_timeout == 1.0 and cfg.request_deadline == 1.8
    assert cfg.log_level == "INFO"
    assert cfg.version == __version__


def test_overrides(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("  s3cret\n")
    cfg = load_config(
        {
            "APP_PORT": "8080",
            "APP_WORKERS": "3",
            "APP_THREADS": "8",
            "APP_REDIS_PORT": "6380",
            "APP_REDIS_DB": "2",
            "APP_REDIS_PASSWORD_FILE": str(pw),
            "APP_POSTGRES_PASSWORD_FILE": str(pw),
            "APP_DEP_TIMEOUT": "0.5",
            "APP_REQUEST_DEADLINE": "1.5",
            "APP_LOG_LEVEL": "debug",
            "APP_VERSION": "9.9.9",
        }
    )
    assert (cfg.port, cfg.workers, cfg.threads) == (8080, 3, 8)
    assert (cfg.redis_port, cfg.redis_db) == (6380, 2)
    assert cfg.redis_password == "s3cret" and cfg.postgres_password == "s3cret"
    assert (cfg.dep_timeout, cfg.request_deadline) == (0.5, 1.5)
    assert cfg.log_level == "DEBUG" and cfg.version == "9.9.9"
    assert "s3cret" not in repr(cfg)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"APP_REDIS_PORT": "abc"}, "APP_REDIS_PORT must be an integer in 1..65535, got 'abc'"),
        ({"APP_PORT": "0"}, "APP_PORT must be an integer in 1..65535"),
        ({"APP_POSTGRES_PORT": "70000"}, "APP_POSTGRES_PORT"),
        ({"APP_WORKERS": "-1"}, "APP_WORKERS"),
        ({"APP_THREADS": "1.5"}, "APP_THREADS"),
        ({"APP_REDIS_DB": "16"}, "APP_REDIS_DB"),
        ({"APP_DEP_TIMEOUT": "-1"}, "APP_DEP_TIMEOUT must be a number of seconds > 0 and <= 10"),
        ({"APP_DEP_TIMEOUT": "0"}, "APP_DEP_TIMEOUT"),
        ({"APP_DEP_TIMEOUT": "11"}, "APP_DEP_TIMEOUT"),
        ({"APP_DEP_TIMEOUT": "nan"}, "APP_DEP_TIMEOUT"),
        ({"APP_REQUEST_DEADLINE": "x"}, "APP_REQUEST_DEADLINE"),
        ({"APP_LOG_LEVEL": "LOUD"}, "APP_LOG_LEVEL"),
        ({"APP_REDIS_HOST": "  "}, "APP_REDIS_HOST"),
        ({"APP_REDIS_PASSWORD_FILE": "/nonexistent/pw"}, "APP_REDIS_PASSWORD_FILE"),
        ({"APP_POSTGRES_PASSWORD_FILE": "/nonexistent/pw"}, "APP_POSTGRES_PASSWORD_FILE"),
        ({"APP_POSTGRES_PASSWORD": "inline"}, "APP_POSTGRES_PASSWORD is not supported"),
    ],
)
def test_invalid_values_name_the_variable(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env)
    message = str(info.value)
    assert needle in message
    assert "\n" not in message


def test_empty_password_file_rejected(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="APP_REDIS_PASSWORD_FILE"):
        load_config({"APP_REDIS_PASSWORD_FILE": str(empty)})


def test_default_workers_is_capped() -> None:
    assert default_workers(1) == 1
    assert default_workers(2) == 2
    assert default_workers(64) == 8


def test_access_log_is_off_unless_asked() -> None:
    assert load_config({}).access_log is False
    assert load_config({"APP_ACCESS_LOG": "1"}).access_log is True
    assert load_config({"APP_ACCESS_LOG": "false"}).access_log is False
    with pytest.raises(ConfigError, match="APP_ACCESS_LOG must be 0, 1, true or false"):
        load_config({"APP_ACCESS_LOG": "yes please"})


def test_granian_command_line_follows_the_config() -> None:
    cfg = load_config({"APP_PORT": "8081", "APP_WORKERS": "3", "APP_THREADS": "6"})
    argv = granian_argv(cfg, executable="/nonexistent/bin/python3")
    assert argv[0] == "granian" and argv[-1] == "prodstack_app.web:create_app"
    pairs = dict(itertools.pairwise(argv[1:-1]))
    assert pairs["--port"] == "8081" and pairs["--interface"] == "wsgi"
    assert pairs["--workers"] == "3" and pairs["--blocking-threads"] == "6"
    assert "--factory" in argv and "--respawn-failed-workers" in argv


def test_deadline_budget_uses_remaining_time() -> None:
    now = [100.0]
    d = Deadline(1.8, clock=lambda: now[0])
    assert d.budget(1.0) == 1.0
    now[0] = 101.5
    assert d.budget(1.0) == pytest.approx(0.3)
    now[0] = 103.0
    assert d.remaining() == 0.0 and d.budget(1.0) == 0.0


def test_request_id_sanitising() -> None:
    assert request_id_from("abc-DEF_1.2") == "abc-DEF_1.2"
    for bad in (None, "", "has space", "x" * 129, "semi;colon", "ünï"):
        rid = request_id_from(bad)
        assert len(rid) == 32 and all(c in "0123456789abcdef" for c in rid)


def test_describe_error_is_one_short_line() -> None:
    msg = describe_error(ConnectionError("refused\nsecond line"))
    assert msg == "ConnectionError: refused"
    assert len(describe_error(ValueError("x" * 500))) == 200
