"""Pure unit tests: logic only, no Docker, no network, no timing thresholds.

The modules under test live beside the suites that use them; they are put on the import
path here.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for folder in ("tests/resilience", "tests/shared", "scripts"):
    sys.path.insert(0, str(ROOT / folder))
