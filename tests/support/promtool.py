"""promtool, which `make test` installs (scripts/ensure-test-tools.sh, Debian's prometheus)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run promtool; a missing one fails the test, since the test set-up installs it."""
    found = shutil.which("promtool")
    assert found, "promtool is missing: run `make tools` (scripts/ensure-test-tools.sh)"
    return subprocess.run(
        [found, *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )
