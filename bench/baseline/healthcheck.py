#!/usr/bin/env python3
"""Container healthcheck: exit 0 if GET /health answers 200 within 2 s.

The seed's way, Python started for each check (the app's own check is app/healthcheck.sh).
"""

import os
import sys
import urllib.request


def main() -> int:
    url = f"http://127.0.0.1:{os.environ.get('APP_PORT') or '5000'}/health"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return 0 if resp.status == 200 else 1
    except Exception:
        return 1


if __name__ == "__main__":
    sys.exit(main())
