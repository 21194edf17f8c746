"""Result files on disk: read JSON (an error names the file and what is wrong), write atomically.

Standard library only: the harness imports these too (`benchmarks.store`).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


class ResultFileError(ValueError):
    """A result file that cannot be read; `why` says what is wrong, the message names the file too."""

    def __init__(self, path: Path, why: str):
        super().__init__(path, why)
        self.path = path
        self.why = why

    def __str__(self) -> str:
        return f"{self.path}: unreadable result file ({self.why}); delete or fix it"


def read_json(path: Path) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ResultFileError(path, f"cannot read: {e}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ResultFileError(path, f"not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder + os.replace: readers never see a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; results are meant to be read
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
