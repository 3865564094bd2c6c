"""JSON that every parser accepts: an undefined figure (NaN, an infinity) is written ``null``.

Python's ``json`` writes ``NaN`` by default, which ``JSON.parse`` and most other parsers
reject; a pass rate over no minors, say, is undefined, not a number.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def finite(value: Any) -> Any:
    """``value`` with every non-finite float (NumPy's too) replaced by None, recursively."""
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value


def dumps(value: Any, **options: Any) -> str:
    """``json.dumps`` of :func:`finite` ``value``; refuses anything that is still not JSON."""
    return json.dumps(finite(value), allow_nan=False, **options)
