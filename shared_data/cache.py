"""The .npz cache: fingerprinted, verified on load, written atomically.

One cache file per (source content, image size) holds the decoded, resized splits
in canonical order -- x_train, y_train, x_test, y_test, plus k_train, k_test (the
32-byte content keys the ``resplit`` protocol sorts by) -- uncompressed, so a warm
load is one read, and ``meta``, a JSON string with the fingerprint and what was
asked for. The split protocol is applied after loading (it is a cheap index), so
``original`` and every ``resplit`` seed share one decode. On load every array is
read (zip CRCs checked) and the fingerprint recomputed;
a truncated, corrupted or mismatching file is reported and rebuilt. Writes go to a
temporary file in the same folder, fsync'd, then ``os.replace``'d into place, so a
concurrent reader sees the old file or the new one, never a torn one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .errors import DataError

ARRAYS = ("x_train", "y_train", "x_test", "y_test")
KEYS = ("k_train", "k_test")
FORMAT = 1


def fingerprint(x_train, y_train, x_test, y_test) -> str:
    """sha256 of the exact bytes, dtypes and shapes of the four arrays (in that order)."""
    h = hashlib.sha256(b"xfbench-data\0")
    for name, arr in zip(ARRAYS, (x_train, y_train, x_test, y_test)):
        arr = np.ascontiguousarray(arr)
        dtype = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
        arr = arr.astype(dtype, copy=False)
        h.update(f"{name}|{arr.dtype.str}|{','.join(map(str, arr.shape))}\n".encode())
        h.update(arr.reshape(-1).view(np.uint8))
    return h.hexdigest()


def keys_digest(arrays: dict) -> str:
    h = hashlib.sha256()
    for k in KEYS:
        h.update(np.ascontiguousarray(arrays[k], dtype=np.uint8).reshape(-1))
    return h.hexdigest()


def default_cache_dir() -> Path:
    env = os.environ.get("XFBENCH_CACHE_DIR")
    return Path(os.path.expanduser(env)) if env else Path.cwd() / ".xfbench" / "cache"


def ensure_dir(cache_dir) -> Path:
    path = Path(os.path.expanduser(str(cache_dir))) if cache_dir else default_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create cache folder {path} ({exc.strerror or exc}); pass --cache-dir "
                        f"(or set XFBENCH_CACHE_DIR) to a writable folder") from None
    if not path.is_dir():
        raise DataError(f"cache folder {path} is not a directory; pass --cache-dir to a writable folder")
    return path


def load(path: Path, expect: dict, log):
    """Return (arrays dict, meta) from a verified cache file, or None (missing or bad -> rebuild)."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ARRAYS + KEYS + ("meta",) if k not in z.files]
            if missing:
                raise ValueError(f"missing arrays {missing}")
            arrays = {k: z[k] for k in ARRAYS + KEYS}
            meta = json.loads(str(z["meta"]))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, json.JSONDecodeError) as exc:
        log(f"[data] WARNING: cache {path} is unreadable ({type(exc).__name__}: {exc}); rebuilding it")
        return None
    for key, value in expect.items():
        if meta.get(key) != value:
            log(f"[data] WARNING: cache {path} was made for {key}={meta.get(key)!r}, not {value!r}; rebuilding it")
            return None
    actual = fingerprint(*(arrays[k] for k in ARRAYS))
    if actual == meta.get("fingerprint") and keys_digest(arrays) != meta.get("keys_sha256"):
        log(f"[data] WARNING: cache {path} is corrupt (content keys do not match); rebuilding it")
        return None
    if actual != meta.get("fingerprint"):
        log(f"[data] WARNING: cache {path} is corrupt (fingerprint {actual[:12]} != recorded "
            f"{str(meta.get('fingerprint'))[:12]}); rebuilding it")
        return None
    return arrays, meta


def save(path: Path, arrays: dict, meta: dict, log) -> bool:
    """Write atomically; on failure warn and return False (the data in memory is still good)."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, meta=np.array(json.dumps(meta, sort_keys=True)), **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the cache is meant to be shared
        os.replace(tmp, path)
        tmp = None
        return True
    except OSError as exc:
        log(f"[data] WARNING: could not write cache {path} ({exc}); continuing without it")
        return False
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
