"""Fixtures shared by several test modules."""

from __future__ import annotations

import os

import prerequisites
import pytest

from benchmarks import parity, workloads


class _ParityByWorkload(dict):
    """Workload -> every implementation of it against the reference, run on first use: the origin at 32x32
    over 4 Adam steps, any other workload at 16x16 over 10 (its trajectory of loss and state)."""

    def __missing__(self, name: str) -> dict:
        w = workloads.get(name)
        spec = w.make_spec(32 if w.is_origin else 16, 1)
        self[name] = parity.run_parity(spec, steps=4 if w.is_origin else 10, batch_size=8, seed=0,
                                       impls=tuple(w.impls), workload=w.name)
        return self[name]


@pytest.fixture(scope="session")
def parity_32():
    return _ParityByWorkload()


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
