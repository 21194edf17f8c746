"""One synthetic stand-in per image size for the whole test session. Tests whose subject is not the data
layer start their cache folder with a copy of it, rather than each generating the 1,283 images again
(about 1.5 s of both cores per folder); `tests/test_data.py` builds its own."""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
from pathlib import Path

from shared_data import load_dataset

_BUILT: dict[int, Path] = {}
_LOCK = threading.Lock()


def seeded(cache_dir: Path, image_size: int = 16) -> Path:
    """`cache_dir`, holding the synthetic stand-in's cache file at `image_size`."""
    with _LOCK:
        if image_size not in _BUILT:
            folder = Path(tempfile.mkdtemp(prefix="xfbench-test-synthetic-"))
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
            ds = load_dataset(source="synthetic", image_size=image_size, cache_dir=folder, log=None)
            _BUILT[image_size] = Path(ds.cache_path)
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / _BUILT[image_size].name
    if not target.exists():
        shutil.copyfile(_BUILT[image_size], target)
    return cache_dir
