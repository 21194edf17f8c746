"""`build_report`: load results, render the page, write it atomically.

The entry point of the harness (at the end of `pytest --benchmark-only`) and of
`xfbench report`. The work is done by, in import order:
`files` (read/write) -> `stats` -> `model` -> `loading` -> `views` -> `verdict` -> `plots` -> `render`.
"""

from __future__ import annotations

from pathlib import Path

from reports.loading import load
from reports.render import ReportError, render, write_page

DEFAULT_OUT = Path(__file__).resolve().parent / "index.html"

__all__ = ["DEFAULT_OUT", "ReportError", "build_report"]


def build_report(
    inputs: list[Path],
    out: Path = DEFAULT_OUT,
    history_dir: Path | None = None,
    include_published: bool = True,
    gate_file: Path | None = None,
) -> Path:
    """Load `inputs` (+ published results), render, write `out` atomically; return `out`.

    Raises ReportError (naming the path) when the output cannot be written.
    """
    model = load(list(inputs), history_dir=history_dir, include_published=include_published,
                 gate_file=gate_file)
    out = Path(out)
    write_page(out, render(model))
    return out
