"""What some tests need and a fresh clone lacks: the full image folder, a browser.

Where one is missing, `tests/conftest.py` skips the tests that use its fixture, with one summary
line per file saying how to run them; under XFBENCH_REQUIRE_ALL=1 (set by `.ci/run` and
`.github/workflows/bench.yml`) nothing is skipped and those fixtures fail instead.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

REQUIRE_ALL = "XFBENCH_REQUIRE_ALL"
DEFAULT_IMAGE_FOLDER = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "horse-or-human"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_ENV_FOLDER = os.environ.get("XFBENCH_DATA_DIR")  # read before any test clears it


def image_folder() -> Path | None:
    path = Path(_ENV_FOLDER or DEFAULT_IMAGE_FOLDER)
    complete = all((path / split / cls).is_dir() for split in ("train", "validation") for cls in ("horses", "humans"))
    return path if complete else None


def chromium() -> str | None:
    return next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)


# fixture name -> (what finds it, what is missing, how to run the tests that use it)
NEEDS = {
    "real_dir": (image_folder, f"no Horses or Humans image folder at {Path(_ENV_FOLDER or DEFAULT_IMAGE_FOLDER)}",
                 "set XFBENCH_DATA_DIR to a folder holding train/ and validation/ from horse-or-human.zip"),
    "chromium": (chromium, f"no headless Chromium (looked for {', '.join(CHROMIUM_NAMES)})",
                 "apt-get install -y chromium"),
}


def missing(fixture: str) -> str:
    """The one line that says what is missing and how to run the tests that need it."""
    _, what, how = NEEDS[fixture]
    return f"{what}; to run these tests: {how} (under {REQUIRE_ALL}=1, as in CI, they fail instead)"


def found(fixture: str):
    """The prerequisite of `fixture`, or a failure naming what is missing (reached only under
    REQUIRE_ALL: elsewhere conftest has skipped its tests)."""
    import pytest

    value = NEEDS[fixture][0]()
    if value is None:
        pytest.fail(missing(fixture), pytrace=False)
    return value
