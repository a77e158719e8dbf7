#!/usr/bin/env python3
"""Container healthcheck: exit 0 if GET /health answers 200, else print why and exit 1.

Docker keeps what this prints in the container's health log, so a failed check says what
failed (refused, timed out, a status) instead of leaving an empty line. The wait,
APP_HEALTHCHECK_TIMEOUT seconds (default 8), stays under Docker's own healthcheck timeout
(10 s by default) so the reason is printed before Docker kills the check: on a slow host (a
small VM, a software-emulated CPU) Python's own start already takes seconds.
"""

import os
import sys
import urllib.request


def main() -> int:
    url = f"http://127.0.0.1:{os.environ.get('APP_PORT') or '5000'}/health"
    timeout = float(os.environ.get("APP_HEALTHCHECK_TIMEOUT") or "8")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            if resp.status == 200:
                return 0
            print(f"{url}: HTTP {resp.status}")
    except Exception as exc:  # any failure is an unhealthy answer; say which
        print(f"{url}: {type(exc).__name__}: {exc}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
