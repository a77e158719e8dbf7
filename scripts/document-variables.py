#!/usr/bin/env python3
"""Write docs/VARIABLES.md: every role variable, from the roles' argument specs and defaults.

scripts/document-variables.py           rewrite docs/VARIABLES.md
scripts/document-variables.py --check   exit 1 when it is stale
"""

import sys
from pathlib import Path

import yaml
from generated_file import write_or_check

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "VARIABLES.md"


def cell(value: object) -> str:
    if isinstance(value, (list, dict)):
        text = yaml.safe_dump(value, default_flow_style=True).strip()
    else:
        text = str(value).lower() if isinstance(value, bool) else str(value)
    text = " ".join(str(text).split())
    return f"`{text}`".replace("|", "\\|") if text else ""


def render() -> str:
    lines = [
        "# Role variables",
        "",
        "Generated from each role's `meta/argument_specs.yml` and `defaults/main.yml` by",
        "`scripts/document-variables.py`; `make lint` fails when this file is stale.",
        "",
    ]
    for role in sorted(p for p in (ROOT / "roles").iterdir() if (p / "meta" / "argument_specs.yml").exists()):
        spec = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]
        defaults_file = role / "defaults" / "main.yml"
        defaults = yaml.safe_load(defaults_file.read_text()) if defaults_file.exists() else {}
        lines += [f"## {role.name}", "", spec.get("short_description", ""), ""]
        lines += ["| variable | type | default | description |", "|---|---|---|---|"]
        for name, option in spec["options"].items():
            kind = option.get("type", "str")
            if option.get("elements"):
                kind += f" of {option['elements']}"
            if option.get("choices"):
                kind += " (" + ", ".join(map(str, option["choices"])) + ")"
            default = "(secret)" if option.get("no_log") else cell(defaults.get(name, ""))
            if option.get("required"):
                default = (default + " " if default else "") + "**required**"
            lines.append(f"| `{name}` | {kind} | {default} | {option.get('description', '')} |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    return write_or_check(TARGET, render(), Path(__file__).name)


if __name__ == "__main__":
    sys.exit(main())
