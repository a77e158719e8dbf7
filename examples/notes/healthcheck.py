"""The image's HEALTHCHECK: exit 0 when GET /health answers 200 within 3 s."""

import os
import sys
import urllib.request

url = f"http://127.0.0.1:{os.environ.get('NOTES_PORT', '8000')}/health"
try:
    with urllib.request.urlopen(url, timeout=3) as resp:
        sys.exit(0 if resp.status == 200 else 1)
except OSError:
    sys.exit(1)
