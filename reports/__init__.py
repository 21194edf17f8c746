"""The xfbench report: one self-contained HTML page built from benchmark results.

`build_report(inputs, out)` is what the harness calls at the end of every
`pytest --benchmark-only`; `xfbench report RESULTS...` is the same from the
command line (see `reports.cli`).
"""

from __future__ import annotations


def build_report(*args, **kwargs):
    """Load results, render the page, write it atomically. See `reports.build.build_report`."""
    from reports.build import build_report as _build_report

    return _build_report(*args, **kwargs)


__all__ = ["build_report"]
