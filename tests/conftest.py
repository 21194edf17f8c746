"""Fixtures shared by several test modules."""

from __future__ import annotations

import os

import prerequisites
import pytest

from benchmarks import parity
from benchmarks.spec import ModelSpec


@pytest.fixture(scope="session")
def parity_32():
    """Every registered implementation against the reference, 32x32 origin spec, 4 Adam steps."""
    return parity.run_parity(ModelSpec(image_size=32), steps=4, batch_size=8, seed=0)


def pytest_collection_modifyitems(config, items):
    """Skip the tests whose prerequisite this machine lacks (tests/prerequisites.py), unless CI
    requires every test to run."""
    if os.environ.get(prerequisites.REQUIRE_ALL) == "1":
        return
    for fixture, (find, _, _) in prerequisites.NEEDS.items():
        users = [item for item in items if fixture in getattr(item, "fixturenames", ())]
        if users and find() is None:
            mark = pytest.mark.skip(reason=prerequisites.missing(fixture))
            for item in users:
                item.add_marker(mark)
