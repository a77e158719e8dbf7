#!/usr/bin/env python3
"""Render nginx/default.conf (the server block baked into the image) from the nginx role's
template and defaults, with TLS and rate limits off, so the image and the role cannot drift.

    scripts/render-nginx-default.py           rewrite nginx/default.conf
    scripts/render-nginx-default.py --check   exit 1 when nginx/default.conf is stale
"""

import sys
from pathlib import Path

import jinja2
import yaml

ROOT = Path(__file__).resolve().parent.parent
ROLE = ROOT / "roles" / "nginx"
TARGET = ROOT / "nginx" / "default.conf"


def render(**overrides: object) -> str:
    """The template rendered with the role's defaults, TLS and limits off, then overrides."""
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    # nginx_app_port reads the app role's app_port (a template): its default here.
    app_defaults = yaml.safe_load((ROOT / "roles" / "app" / "defaults" / "main.yml").read_text())
    defaults["nginx_app_port"] = app_defaults["app_port"]
    defaults.update({"nginx_tls_enabled": False, "nginx_rate_limit_enabled": False, **overrides})
    env = jinja2.Environment(  # the options Ansible's template module uses
        loader=jinja2.FileSystemLoader(ROLE / "templates"),
        trim_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    return env.get_template("default.conf.j2").render(**defaults)


def main() -> int:
    # Imported here: tests load render() from this file by path, without scripts/ on sys.path.
    from generated_file import write_or_check

    return write_or_check(TARGET, render(), Path(__file__).name)


if __name__ == "__main__":
    sys.exit(main())
