"""Fixtures shared by several test modules."""

from __future__ import annotations

import pytest

from benchmarks import parity
from benchmarks.spec import ModelSpec


@pytest.fixture(scope="session")
def parity_32():
    """Every registered implementation against the reference, 32x32 origin spec, 4 Adam steps."""
    return parity.run_parity(ModelSpec(image_size=32), steps=4, batch_size=8, seed=0)
