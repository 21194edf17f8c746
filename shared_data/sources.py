"""Where the images come from: a folder of PNGs, TFDS, or a synthetic stand-in.

Every loader returns a :class:`Raw` holding, per split ("train", "test"), the images
already decoded to RGB and resized by :mod:`shared_data.preprocess`, their int32
labels (horses=0, humans=1, the TFDS order) and a content key per image. The split
arrays are then put in one canonical order -- by (label, sha256 of the native
300x300 RGB pixels) -- so the same images give the same bytes whichever source or
directory listing order they came from (a folder copy and TFDS give identical arrays,
hence identical fingerprints).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from . import preprocess
from .errors import DataError

CLASS_NAMES = ("horses", "humans")  # label = index (TFDS ClassLabel order)
SPLITS = ("train", "test")
FOLDER_SPLITS = {"train": "train", "test": "validation"}  # our split -> archive folder
# The real split sizes (TFDS horses_or_humans 3.0.0 == the two archives).
COUNTS = {"train": {"horses": 500, "humans": 527}, "test": {"horses": 128, "humans": 128}}

TFDS_NAME = "horses_or_humans"
# What tfds downloads first; the probe asks for its headers (HTTPS HEAD). A bare TCP
# connect is not enough: sandboxes and captive networks accept connections they never serve.
PROBE_URL = "https://storage.googleapis.com/download.tensorflow.org/data/validation-horse-or-human.zip"
PROBE_TIMEOUT_S = 3.0

REAL_DATA_OPTIONS = (
    "use the image folder (--source folder --data-dir DIR, or set XFBENCH_DATA_DIR=DIR, where DIR holds "
    "train/ and validation/ from horse-or-human.zip; in this project ../shared/datasets/horse-or-human) "
    "or a prepared TFDS copy (--tfds-data-dir DIR)")
OFFLINE_OPTIONS = REAL_DATA_OPTIONS + ", or the synthetic stand-in (--source synthetic)"


@dataclass
class Raw:
    """Decoded, resized images of one source, before the split protocol."""

    images: dict  # split -> uint8 (N, S, S, 3)
    labels: dict  # split -> int32 (N,)
    keys: dict  # split -> list[bytes] content keys of the native pixels
    detail: str


def _default_workers() -> int:
    return max(2, min(8, (os.cpu_count() or 2) + 1))


def canonical_order(raw: Raw) -> Raw:
    """Sort each split by (label, content key): a source-independent, listing-independent order."""
    images, labels, keys = {}, {}, {}
    for split in SPLITS:
        order = sorted(range(len(raw.keys[split])), key=lambda i: (int(raw.labels[split][i]), raw.keys[split][i]))
        idx = np.asarray(order, dtype=np.int64)
        images[split] = np.ascontiguousarray(raw.images[split][idx]) if len(idx) else raw.images[split]
        labels[split] = np.ascontiguousarray(raw.labels[split][idx]).astype(np.int32)
        keys[split] = [raw.keys[split][i] for i in order]
    return Raw(images, labels, keys, raw.detail)


# ----------------------------------------------------------------------------- folder


def resolve_folder(data_dir) -> Path:
    """Check that `data_dir` is a folder of the archive layout; return it resolved."""
    root = Path(os.path.expanduser(str(data_dir)))
    if not root.exists():
        raise DataError(
            f"data folder {root} does not exist; pass --data-dir (or XFBENCH_DATA_DIR) pointing at the "
            f"folder that holds train/ and validation/ from horse-or-human.zip")
    if not root.is_dir():
        raise DataError(f"data folder {root} is not a directory; pass the folder that holds train/ and validation/")
    root = root.resolve()
    for split, sub in FOLDER_SPLITS.items():
        if not (root / sub).is_dir():
            hint = ""
            nested = sorted(p for p in root.iterdir() if p.is_dir() and (p / "train").is_dir()
                            and (p / "validation").is_dir())
            if nested:
                hint = f" (did you mean {nested[0]}?)"
            raise DataError(
                f"data folder {root} has no {sub}/ folder{hint}; expected the archive layout "
                f"{{train,validation}}/{{horses,humans}}/*.png -- unpack horse-or-human.zip into train/ "
                f"and validation-horse-or-human.zip into validation/")
    return root


def scan_folder(root: Path) -> tuple[dict, str]:
    """List and validate the layout; return ({split: [(path, label), ...]}, listing digest).

    The digest covers the resolved path and every file's relative name, size and mtime,
    so a changed file changes the cache key. Hidden files (".DS_Store") are ignored;
    anything else that is not a PNG is an error (TFDS would silently skip it; here a
    stray file more likely means the wrong folder).
    """
    digest = hashlib.sha256(str(root).encode())
    listing = {}
    for split, sub in FOLDER_SPLITS.items():
        split_dir = root / sub
        extra = sorted(p.name for p in split_dir.iterdir()
                       if not p.name.startswith(".") and p.name not in CLASS_NAMES)
        if extra:
            raise DataError(
                f"{split_dir / extra[0]} is not a class folder; {split_dir} must hold exactly "
                f"{'/ and '.join(CLASS_NAMES)}/ -- move it out of the data folder")
        entries = []
        for label, cls in enumerate(CLASS_NAMES):
            cls_dir = split_dir / cls
            if not cls_dir.is_dir():
                raise DataError(
                    f"class folder {cls_dir} is missing; the layout is {{train,validation}}/{{horses,humans}}/*.png "
                    f"-- restore it from the archive")
            names = sorted(os.listdir(cls_dir))
            pngs = []
            for name in names:
                if name.startswith("."):
                    continue
                path = cls_dir / name
                if path.is_dir():
                    raise DataError(f"{path} is a folder inside a class folder; class folders hold only *.png files -- move it out")
                if not name.endswith(".png"):
                    raise DataError(
                        f"{path} is not a .png file; class folders hold only the dataset's PNGs -- remove it "
                        f"(or convert it to PNG)")
                st = path.stat()
                digest.update(f"{sub}/{cls}/{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
                pngs.append((path, label))
            if not pngs:
                raise DataError(f"class folder {cls_dir} holds no .png images; restore its images from the archive")
            entries.extend(pngs)
        listing[split] = entries
    return listing, digest.hexdigest()


def decode_png(path, image_size: int) -> tuple[bytes, np.ndarray]:
    """Decode one PNG to RGB exactly as TFDS does, validate it, and resize it."""
    path = Path(path)
    what_to_do = "replace it with the original from the archive (sha256sum -c horse-or-human.sha256 finds damaged files)"
    try:
        with Image.open(path) as im:
            fmt = im.format
            size = im.size
            if fmt != "PNG":
                raise DataError(f"{path} is not a PNG image (it is {fmt}); {what_to_do}")
            if size != (preprocess.NATIVE_SIZE, preprocess.NATIVE_SIZE):
                raise DataError(
                    f"{path} is {size[0]}x{size[1]} pixels, expected {preprocess.NATIVE_SIZE}x"
                    f"{preprocess.NATIVE_SIZE} like every Horses or Humans image; {what_to_do}")
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError(f"{path} is not a readable image (unknown or corrupt format); {what_to_do}") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path} cannot be decoded (truncated or corrupt: {exc}); {what_to_do}") from None
    return preprocess.content_key(rgb), preprocess.resize(rgb, image_size)


def load_folder(root: Path, listing: dict, image_size: int, log, workers: int | None = None) -> Raw:
    workers = workers or _default_workers()
    t0 = time.perf_counter()
    images, labels, keys = {}, {}, {}
    with ThreadPoolExecutor(workers) as pool:
        for split in SPLITS:
            entries = listing[split]
            results = list(pool.map(lambda e: decode_png(e[0], image_size), entries))
            keys[split] = [k for k, _ in results]
            images[split] = np.stack([a for _, a in results]).astype(np.uint8, copy=False)
            labels[split] = np.asarray([lab for _, lab in entries], dtype=np.int32)
    n = sum(len(listing[s]) for s in SPLITS)
    log(f"[data] decoded {n} PNGs from {root} in {time.perf_counter() - t0:.1f}s ({workers} threads)")
    return Raw(images, labels, keys, str(root))


# ----------------------------------------------------------------------------- tfds


def tfds_data_dir_path(tfds_data_dir=None) -> Path:
    if tfds_data_dir:
        return Path(os.path.expanduser(str(tfds_data_dir)))
    env = os.environ.get("TFDS_DATA_DIR")
    if env:
        return Path(os.path.expanduser(env))
    return Path.home() / "tensorflow_datasets"


def tfds_prepared(tfds_data_dir=None) -> Path | None:
    """The prepared version folder of horses_or_humans under the TFDS data dir, if any.

    A cheap filesystem check (no tensorflow import): TFDS writes dataset_info.json
    last, once the version is fully prepared.
    """
    base = tfds_data_dir_path(tfds_data_dir) / TFDS_NAME
    if not base.is_dir():
        return None
    found = sorted(p.parent for p in base.glob("*/dataset_info.json"))
    return found[-1] if found else None


def probe_download(url: str | None = None, timeout: float | None = None) -> tuple[bool, str]:
    """Can TFDS's download be fetched? One HTTPS HEAD request, bounded in time.

    tfds itself retries name resolution for ~200 s offline; this answers within
    about `timeout` seconds, DNS resolution included (run in a daemon thread).
    Honours the usual *_proxy environment variables, as the tfds download does.
    """
    import urllib.error
    import urllib.request

    url = url or PROBE_URL
    timeout = PROBE_TIMEOUT_S if timeout is None else timeout
    result = {}

    def attempt():
        try:
            req = urllib.request.Request(url, method="HEAD")
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                result["status"] = resp.status
        except urllib.error.HTTPError as exc:
            result["err"] = f"HTTP {exc.code}"
        except Exception as exc:  # URLError, socket errors, TLS errors, ...
            reason = getattr(exc, "reason", exc)
            result["err"] = f"{type(reason).__name__}: {reason}"

    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    status = result.get("status")
    if status is not None and status < 400:
        return True, f"{url} answers (HTTP {status})"
    return False, f"cannot fetch {url} ({result.get('err', f'no answer within {timeout:g}s')})"


def _hide_gpus_from_tf(tf) -> None:
    # This process only reads data with TF; do not let it grab accelerator memory.
    try:
        tf.config.set_visible_devices([], "GPU")
    except Exception:  # already initialised (e.g. Keras on TF in this process): leave it
        pass


def load_tfds(image_size: int, tfds_data_dir, log, check_ready: bool = True) -> Raw:
    """Load horses_or_humans through ``tfds.load``; TFDS "test" is the folder's "validation".

    Fails fast when the dataset is neither prepared nor downloadable.
    """
    data_dir = tfds_data_dir_path(tfds_data_dir)
    if check_ready and tfds_prepared(tfds_data_dir) is None:
        ok, why = probe_download()
        if not ok:
            raise DataError(
                f"TFDS {TFDS_NAME} is not prepared under {data_dir} and cannot be downloaded ({why}); "
                f"{OFFLINE_OPTIONS}")
        log(f"[data] TFDS {TFDS_NAME} not prepared under {data_dir}; downloading (~160 MB)")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
        import tensorflow_datasets as tfds
    except ImportError as exc:  # pragma: no cover - both are declared dependencies
        raise DataError(f"--source tfds needs tensorflow-datasets ({exc}); pip install -e . or {OFFLINE_OPTIONS}") from None
    _hide_gpus_from_tf(tf)
    t0 = time.perf_counter()
    try:
        loaded = tfds.load(TFDS_NAME, split=list(SPLITS), data_dir=str(data_dir) if tfds_data_dir else None)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"tfds.load({TFDS_NAME!r}, data_dir={str(data_dir)!r}) failed ({type(exc).__name__}: {exc}); "
                        f"{OFFLINE_OPTIONS}") from None
    images, labels, keys = {}, {}, {}
    native = (preprocess.NATIVE_SIZE, preprocess.NATIVE_SIZE, 3)
    for split, ds in zip(SPLITS, loaded):
        imgs, labs, ks = [], [], []
        for ex in tfds.as_numpy(ds):
            rgb = np.asarray(ex["image"], dtype=np.uint8)
            if rgb.shape != native:
                raise DataError(f"TFDS {TFDS_NAME} {split} example has shape {rgb.shape}, expected {native}; "
                                f"delete {data_dir / TFDS_NAME} and let TFDS prepare it again")
            ks.append(preprocess.content_key(rgb))
            imgs.append(preprocess.resize(rgb, image_size))
            labs.append(int(ex["label"]))
        images[split] = (np.stack(imgs) if imgs else np.zeros((0, image_size, image_size, 3), np.uint8))
        labels[split] = np.asarray(labs, dtype=np.int32)
        keys[split] = ks
    log(f"[data] read TFDS {TFDS_NAME} from {data_dir} in {time.perf_counter() - t0:.1f}s")
    return Raw(images, labels, keys, f"tfds:{TFDS_NAME} data_dir={data_dir}")


# ----------------------------------------------------------------------------- synthetic

SYNTHETIC_SEED = 20190201  # fixed: the stand-in is one fixed dataset, whatever the run seed


SYNTHETIC_BASE = 100  # drawn at 100x100, upscaled 3x (nearest) to the native 300x300: cheap on 2 cores
_GRID = None


def synthetic_image(split: str, index: int, label: int) -> np.ndarray:
    """One deterministic native 300x300 RGB stand-in image.

    Learnable but not trivial: both classes share the background, gradient and
    noise distributions; horses (0) carry a wide, warm-brown ellipse, humans (1) a
    tall, skin-toned one, at random position, scale and shade.
    """
    global _GRID
    n = SYNTHETIC_BASE
    if _GRID is None:
        _GRID = np.mgrid[0:n, 0:n].astype(np.float32) / n
    yy, xx = _GRID
    rng = np.random.default_rng((SYNTHETIC_SEED, SPLITS.index(split), index))
    bg = rng.uniform(40, 200, size=3).astype(np.float32)
    grad = rng.uniform(-40, 40, size=3).astype(np.float32)
    cy, cx = rng.uniform(0.3, 0.7, size=2)
    scale = rng.uniform(0.7, 1.3)
    if label == 0:
        ry, rx, base = 0.16 * scale, 0.32 * scale, (140, 90, 50)
    else:
        ry, rx, base = 0.34 * scale, 0.11 * scale, (225, 180, 150)
    colour = np.asarray(base, np.float32) + rng.normal(0, 20, 3).astype(np.float32)
    img = rng.standard_normal((n, n, 3), dtype=np.float32)
    img *= 12
    img += bg
    img += grad * yy[..., None]
    mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    img[mask] += colour - bg
    np.clip(img, 0, 255, out=img)
    k = preprocess.NATIVE_SIZE // n
    return np.repeat(np.repeat(img.astype(np.uint8), k, axis=0), k, axis=1)


def load_synthetic(image_size: int, log, counts=None) -> Raw:
    counts = counts or COUNTS
    t0 = time.perf_counter()
    images, labels, keys = {}, {}, {}

    def make(job):
        split, i, label = job
        rgb = synthetic_image(split, i, label)
        return preprocess.content_key(rgb), preprocess.resize(rgb, image_size)

    with ThreadPoolExecutor(_default_workers()) as pool:
        for split in SPLITS:
            jobs = []
            for label, cls in enumerate(CLASS_NAMES):
                start = len(jobs)
                jobs.extend((split, start + j, label) for j in range(counts[split][cls]))
            results = list(pool.map(make, jobs))
            images[split] = np.stack([a for _, a in results])
            labels[split] = np.asarray([lab for _, _, lab in jobs], dtype=np.int32)
            keys[split] = [k for k, _ in results]
    log(f"[data] generated synthetic stand-in in {time.perf_counter() - t0:.1f}s")
    return Raw(images, labels, keys, f"synthetic v{preprocess.PREPROCESS_VERSION} (generator seed {SYNTHETIC_SEED})")
