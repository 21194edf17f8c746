"""How numbers read on the page: the template's filters (`|dur`, `|num`, `|pct`, `|sci`, `|ratio`, `|ci`,
`|bytes`, `|wbr`).

Each shows a missing or non-numeric value as "–" (or as it is), never fails.
"""

from __future__ import annotations

from typing import Any

import markupsafe

from benchmarks.record import num
from reports.stats import Ratio


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


def fmt_ci(r: Any) -> str:
    """A Ratio as "×1.06 [1.02–1.10]" (its 95% interval; three decimals where the interval is narrow),
    or "×1.06" where it has none."""
    if not isinstance(r, Ratio):
        return "–"
    if not r.has_interval:
        return fmt_ratio(r.value)
    d = 2 if r.hi - r.lo >= 0.05 else 3
    return f"×{r.value:.{d}f} [{r.lo:.{d}f}–{r.hi:.{d}f}]"


def fmt_bytes(v: Any, signed: bool = False) -> str:
    """Bytes in binary units: "1.2 GiB"; with signed, "+30 MiB" / "−2.0 MiB"."""
    n = num(v)
    if n is None:
        return "–"
    sign = ("+" if n >= 0 else "−") if signed else ("−" if n < 0 else "")
    a = abs(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if a < 1024 or unit == "GiB":
            return f"{sign}{a:.0f} {unit}" if unit == "B" else f"{sign}{a:.3g} {unit}"
        a /= 1024
    raise AssertionError("unreachable")


def wbr(s: Any) -> markupsafe.Markup:
    """Escaped text with a line-break opportunity after each "_", "/" and "," (long identifiers wrap there)."""
    text = str(markupsafe.escape(s))
    for ch in "_/,":
        text = text.replace(ch, ch + "<wbr>")
    return markupsafe.Markup(text)


FILTERS = {"dur": fmt_duration, "num": fmt_num, "pct": fmt_pct, "sci": fmt_sci, "ratio": fmt_ratio, "ci": fmt_ci,
           "bytes": fmt_bytes, "wbr": wbr}
