"""How hard the reliability suite pushes: reduced counts by default (CI), full counts on demand.

    COALITION_STRESS=full pytest tests/reliability

Every test here takes its sizes from `count`, so the same code proves the guarantee in CI in
minutes and at the issue's full scale when asked.
"""

from __future__ import annotations

import os

FULL = os.environ.get("COALITION_STRESS", "").strip().lower() == "full"


def count(ci: int, full: int) -> int:
    """`full` under COALITION_STRESS=full, else `ci`."""
    return full if FULL else ci
