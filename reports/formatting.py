"""How numbers read on the page: the template's filters (`|dur`, `|num`, `|pct`, `|sci`, `|ratio`).

Each shows a missing or non-numeric value as "–" (or as it is), never fails.
"""

from __future__ import annotations

from typing import Any

from reports.model import num


def fmt_duration(v: Any) -> str:
    v = num(v)
    if v is None:
        return "–"
    a = abs(v)
    if a >= 100:
        return f"{v:.0f} s"
    if a >= 1:
        return f"{v:.2f} s"
    if a >= 1e-3:
        return f"{v * 1e3:.3g} ms"
    return f"{v * 1e6:.3g} µs"


def fmt_num(v: Any, digits: int = 3) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    n = num(v)
    if n is None:
        return "–" if v is None else str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if abs(n) >= 1000:
        return f"{n:,.0f}"
    return f"{n:.{digits}g}"


def fmt_pct(v: Any, digits: int = 1) -> str:
    n = num(v)
    return "–" if n is None else f"{n * 100:.{digits}f}%"


def fmt_sci(v: Any) -> str:
    n = num(v)
    if n is None:
        return "–" if v is None else str(v)
    if n == 0:
        return "0"
    return f"{n:.2g}" if 1e-3 <= abs(n) < 1e4 else f"{n:.1e}"


def fmt_ratio(v: Any) -> str:
    n = num(v)
    return "–" if n is None else f"×{n:.2f}"


FILTERS = {"dur": fmt_duration, "num": fmt_num, "pct": fmt_pct, "sci": fmt_sci, "ratio": fmt_ratio}
