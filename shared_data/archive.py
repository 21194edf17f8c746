"""Archives: a dataset cache carried where the images are not (`xfbench data --export`).

Format 2, what `--export` writes: an ``.npz`` whose images are lossless WebP sheets
(tiles of ``image_size`` pixels, row-major, up to 16383 px a side, train then test),
plus the labels, the content keys the ``resplit`` protocol sorts by and the cache's
``meta``. WebP's lossless mode predicts each pixel from its neighbours before
entropy coding: at 64 px it is 44% smaller than zip on the same bytes, and it decodes
to the very same bytes (the fingerprint is checked on every read). Format 1, what
earlier versions exported, is the cache file itself, compressed; both are read.
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from . import cache
from .errors import DataError

FORMAT = 2
CODEC = "webp-lossless"
MAX_SHEET_SIDE = 16383  # WebP's largest dimension
LABELS_AND_KEYS = ("y_train", "y_test", "k_train", "k_test")


def _tiles_per_side(n: int, size: int) -> int:
    return max(1, min(math.ceil(math.sqrt(n)), MAX_SHEET_SIDE // size))


def encode_sheets(x: np.ndarray) -> list[bytes]:
    """(N, S, S, 3) uint8 -> lossless WebP sheets of up to k x k tiles each."""
    n, size = len(x), x.shape[1]
    k = _tiles_per_side(n, size)
    sheets = []
    for start in range(0, n, k * k):
        chunk = x[start:start + k * k]
        rows = math.ceil(len(chunk) / k)
        sheet = np.zeros((rows * k, size, size, 3), np.uint8)
        sheet[:len(chunk)] = chunk
        sheet = sheet.reshape(rows, k, size, size, 3).transpose(0, 2, 1, 3, 4).reshape(rows * size, k * size, 3)
        buf = io.BytesIO()
        # method 5 gives the same size as 6 here, five times faster
        Image.fromarray(sheet).save(buf, "WEBP", lossless=True, quality=100, method=5, exact=True)
        sheets.append(buf.getvalue())
    return sheets


def decode_sheets(sheets: list[bytes], n: int, size: int) -> np.ndarray:
    k = _tiles_per_side(n, size)
    parts = []
    for blob in sheets:
        with Image.open(io.BytesIO(blob)) as im:
            if im.format != "WEBP":
                raise ValueError(f"a sheet is {im.format}, not WebP")
            sheet = np.asarray(im.convert("RGB"), dtype=np.uint8)
        rows, cols = sheet.shape[0] // size, sheet.shape[1] // size
        if cols != k or sheet.shape[0] != rows * size or sheet.shape[1] != cols * size:
            raise ValueError(f"a sheet is {sheet.shape[1]}x{sheet.shape[0]} px, not a grid of {k} tiles of {size} px")
        parts.append(sheet.reshape(rows, size, cols, size, 3).transpose(0, 2, 1, 3, 4).reshape(-1, size, size, 3))
    x = np.concatenate(parts) if parts else np.zeros((0, size, size, 3), np.uint8)
    if len(x) < n:
        raise ValueError(f"the sheets hold {len(x)} images, the archive says {n}")
    return np.ascontiguousarray(x[:n])


def portable_meta(meta: dict) -> dict:
    """The meta without the exporting machine's absolute paths (an archive travels)."""
    out = dict(meta)
    detail = out.get("source_detail")
    if isinstance(detail, str):
        out["source_detail"] = " ".join(Path(w).name if os.path.isabs(w) else w for w in detail.split(" "))
    return out


def write(path: Path, arrays: dict, meta: dict, log) -> Path:
    """Write a format-2 archive of a cache's arrays, atomically."""
    x = np.concatenate([arrays["x_train"], arrays["x_test"]])
    blobs = encode_sheets(x)
    sizes = np.asarray([len(b) for b in blobs], np.int64)
    out = {"sheets": np.frombuffer(b"".join(blobs), np.uint8), "sheet_sizes": sizes,
           **{k: arrays[k] for k in LABELS_AND_KEYS}}
    meta = dict(portable_meta(meta), format=FORMAT, codec=CODEC,
                counts={"train": len(arrays["y_train"]), "test": len(arrays["y_test"])})
    if not (cache.ensure_dir(path.parent) and cache.save(path, out, meta, log)):
        raise DataError(f"cannot write the archive {path}; choose a writable path for --export")
    return path


def read(path: Path, image_size: int, preprocess_version: int) -> tuple[dict, dict]:
    """(arrays, meta) of a format-1 or format-2 archive at `image_size`, fingerprint verified.

    Raises DataError naming the file and what to do.
    """
    redo = f"export it again with `xfbench data --image-size {image_size} --export {path}`"
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            fmt = meta.get("format")
            if fmt == cache.FORMAT:
                arrays = {k: z[k] for k in cache.ARRAYS + cache.KEYS}
            elif fmt == FORMAT:
                sizes = z["sheet_sizes"].tolist()
                blob = z["sheets"].tobytes()
                offsets = np.cumsum([0, *sizes]).tolist()
                if offsets[-1] != len(blob):
                    raise ValueError(f"the sheets hold {len(blob)} bytes, their sizes add up to {offsets[-1]}")
                sheets = [blob[a:b] for a, b in zip(offsets, offsets[1:])]
                counts = meta["counts"]
                x = decode_sheets(sheets, counts["train"] + counts["test"], int(meta["image_size"]))
                arrays = {"x_train": x[:counts["train"]], "x_test": x[counts["train"]:],
                          **{k: z[k] for k in LABELS_AND_KEYS}}
            else:
                raise DataError(f"archive {path} has format {fmt!r}; this xfbench reads formats "
                                f"{cache.FORMAT} and {FORMAT}: {redo}")
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"archive {path} does not exist; {redo}") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise DataError(f"archive {path} is unreadable or corrupt ({type(exc).__name__}: {exc}); {redo}") from None
    for key, want in (("image_size", image_size), ("preprocess_version", preprocess_version)):
        if meta.get(key) != want:
            raise DataError(f"archive {path} was made for {key}={meta.get(key)!r}, not {want!r}; {redo}")
    if cache.fingerprint(*(arrays[k] for k in cache.ARRAYS)) != meta.get("fingerprint") \
            or cache.keys_digest(arrays) != meta.get("keys_sha256"):
        raise DataError(f"archive {path} is corrupt (its bytes do not match its fingerprint); {redo}")
    return arrays, meta


# ----------------------------------------------------------------------------- the embedded copy

EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"  # licence and attribution: its README.md


def embedded_path(image_size: int) -> Path:
    return EMBEDDED_DIR / f"horses_or_humans-{image_size}px.npz"


def embedded_sizes() -> tuple[int, ...]:
    """The image sizes the repository ships the real images at."""
    return tuple(sorted(int(p.stem.rsplit("-", 1)[1][:-2]) for p in EMBEDDED_DIR.glob("horses_or_humans-*px.npz")))
