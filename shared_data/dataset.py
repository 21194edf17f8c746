"""`load_dataset`: pick the source, then cache hit or decode -> resize -> protocol -> cache."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import archive, cache, preprocess, protocols, sources
from .errors import DataError
from .sources import CLASS_NAMES

SOURCES = ("tfds", "folder", "embedded", "synthetic", "archive")
DATA_DIR_ENV = "XFBENCH_DATA_DIR"

SYNTHETIC_NOTICE = ("SYNTHETIC DATA: a deterministic stand-in with the shapes and split sizes of Horses or "
                    "Humans, NOT the real images; accuracy on it says nothing about the real dataset")


@dataclass(frozen=True, eq=False)
class Dataset:
    """The preprocessed dataset. Arrays are read-only: every consumer shares the same bytes."""

    x_train: np.ndarray = field(repr=False)  # uint8 (N, H, W, 3)
    y_train: np.ndarray = field(repr=False)  # int32 (N,), horses=0 humans=1
    x_test: np.ndarray = field(repr=False)
    y_test: np.ndarray = field(repr=False)
    source: str  # "tfds" | "folder" | "embedded" | "synthetic" ("archive" reads as the source it copies)
    source_detail: str
    protocol: str
    image_size: int
    seed: int
    fingerprint: str
    cache_path: str
    from_cache: bool
    class_names: tuple = CLASS_NAMES
    source_reason: str = ""  # why this source was chosen
    notice: str = ""  # non-empty for synthetic data (and says whether it was a fallback)

    @property
    def synthetic(self) -> bool:
        return self.source == "synthetic"

    def split_counts(self) -> dict:
        return {
            split: {name: int(np.sum(y == i)) for i, name in enumerate(self.class_names)}
            for split, y in (("train", self.y_train), ("test", self.y_test))
        }

    def summary(self) -> dict:
        """The `xfbench data --json` object (also what results record about the data)."""
        return {
            "source": self.source,
            "source_detail": self.source_detail,
            "source_reason": self.source_reason,
            "synthetic": self.synthetic,
            "notice": self.notice,
            "protocol": self.protocol,
            "image_size": self.image_size,
            "seed": self.seed,
            "splits": self.split_counts(),
            "shapes": {"x_train": list(self.x_train.shape), "y_train": list(self.y_train.shape),
                       "x_test": list(self.x_test.shape), "y_test": list(self.y_test.shape)},
            "dtypes": {"image": str(self.x_train.dtype), "label": str(self.y_train.dtype)},
            "class_names": list(self.class_names),
            "resize": preprocess.RESIZE_METHOD,
            "preprocess_version": preprocess.PREPROCESS_VERSION,
            "fingerprint": self.fingerprint,
            "cache_path": self.cache_path,
            "from_cache": self.from_cache,
        }


@dataclass
class _Choice:
    source: str
    reason: str
    notice: str = ""
    root: Path | None = None  # folder
    listing: dict | None = None  # folder
    digest: str = ""  # identifies the source's content for the cache key
    detail: str = ""


def _folder_choice(data_dir, reason) -> _Choice:
    root = sources.resolve_folder(data_dir)
    listing, digest = sources.scan_folder(root)
    return _Choice("folder", reason, root=root, listing=listing, digest=digest, detail=str(root))


def _tfds_choice(tfds_data_dir, reason) -> _Choice:
    base = sources.tfds_data_dir_path(tfds_data_dir)
    prepared = sources.tfds_prepared(tfds_data_dir)
    version = prepared.name if prepared else "3.0.0"
    digest = hashlib.sha256(f"{base.resolve()}\0{sources.TFDS_NAME}\0{version}".encode()).hexdigest()
    return _Choice("tfds", reason, digest=digest, detail=f"tfds:{sources.TFDS_NAME}:{version} data_dir={base}")


def _synthetic_choice(reason, notice) -> _Choice:
    digest = hashlib.sha256(f"synthetic\0{sources.SYNTHETIC_SEED}".encode()).hexdigest()
    return _Choice("synthetic", reason, notice=notice, digest=digest,
                   detail=f"synthetic stand-in (generator seed {sources.SYNTHETIC_SEED})")


def _archive_choice(data_dir) -> _Choice:
    if not data_dir:
        raise DataError("--source archive needs the archive file: pass --data-dir FILE.npz "
                        "(made with `xfbench data ... --export FILE.npz`)")
    path = Path(data_dir)
    if not path.is_file():
        raise DataError(f"archive {path} does not exist; make one with `xfbench data ... --export {path}`")
    return _Choice("archive", f"--source archive with --data-dir {path}", root=path, detail=str(path))


def _embedded_choice(image_size, reason) -> _Choice:
    path = archive.embedded_path(image_size)
    if not path.is_file():
        sizes = ", ".join(f"{s}" for s in archive.embedded_sizes()) or "none (the checkout lost them)"
        raise DataError(f"the repository ships the real images at {sizes} px, not at {image_size} px "
                        f"(an embedded copy is never resampled to another size); pass --image-size "
                        f"{' or '.join(map(str, archive.embedded_sizes())) or '32 or 64'}, or {sources.OFFLINE_OPTIONS}")
    return _Choice("embedded", reason, root=path, detail=str(path.relative_to(archive.EMBEDDED_DIR.parents[1])))


def resolve_source(source, data_dir, tfds_data_dir, log, image_size) -> _Choice:
    """Pick the source for `image_size`. An explicit choice that fails raises; only the default
    falls back: folder, TFDS copy, the embedded copy at this size, a TFDS download, synthetic."""
    if source is not None and source not in SOURCES:
        raise DataError(f"unknown source {source!r}; pass --source {', '.join(SOURCES)} (or leave it out to pick automatically)")
    env_dir = os.environ.get(DATA_DIR_ENV) or None
    if source == "folder":
        if data_dir:
            return _folder_choice(data_dir, "--source folder with --data-dir")
        if env_dir:
            return _folder_choice(env_dir, f"--source folder with {DATA_DIR_ENV}={env_dir}")
        raise DataError(f"--source folder needs the image folder: pass --data-dir DIR or set {DATA_DIR_ENV}=DIR "
                        f"(DIR holds train/ and validation/ from horse-or-human.zip)")
    if source == "tfds":
        if data_dir:
            raise DataError("--data-dir is the image folder for --source folder; for TFDS pass --tfds-data-dir "
                            "(or drop --source tfds)")
        return _tfds_choice(tfds_data_dir, "--source tfds")
    if source == "archive":
        return _archive_choice(data_dir)
    if source == "embedded":
        if data_dir:
            raise DataError("--data-dir was given with --source embedded, which reads the copy in the repository; "
                            "drop one of them")
        return _embedded_choice(image_size, "--source embedded")
    if source == "synthetic":
        if data_dir:
            raise DataError("--data-dir was given with --source synthetic, which reads no files; drop one of them")
        return _synthetic_choice("--source synthetic", SYNTHETIC_NOTICE + " (chosen with --source synthetic)")
    # automatic
    if data_dir:
        return _folder_choice(data_dir, "--data-dir given")
    if env_dir:
        return _folder_choice(env_dir, f"{DATA_DIR_ENV}={env_dir}")
    prepared = sources.tfds_prepared(tfds_data_dir)
    if prepared is not None:
        return _tfds_choice(tfds_data_dir, f"TFDS copy prepared at {prepared}")
    if archive.embedded_path(image_size).is_file():
        # the very bytes a folder or TFDS download gives at this size (same fingerprint): no download
        return _embedded_choice(image_size, f"no --data-dir/{DATA_DIR_ENV} and no TFDS copy; the real images "
                                            f"ship with the repository at {image_size} px")
    ok, why = sources.probe_download()
    if ok:
        return _tfds_choice(tfds_data_dir, f"no --data-dir/{DATA_DIR_ENV}; TFDS not prepared but downloadable ({why})")
    sizes = " and ".join(map(str, archive.embedded_sizes()))
    reason = (f"FALLBACK: no --data-dir, no {DATA_DIR_ENV}, TFDS not prepared under "
              f"{sources.tfds_data_dir_path(tfds_data_dir)} and not downloadable ({why}), and the "
              f"repository ships the real images at {sizes} px only, not at {image_size} px")
    notice = f"{SYNTHETIC_NOTICE}. {reason}. To use the real images: {sources.REAL_DATA_OPTIONS}"
    banner = "!" * 78
    log(f"[data] {banner}\n[data] {notice}\n[data] {banner}")
    return _synthetic_choice(reason, notice)


def _cache_name(choice: _Choice, image_size: int) -> str:
    # One file per (source content, size): the protocol/seed are applied after loading.
    return f"{choice.source}-{choice.digest[:16]}-{image_size}px-v{preprocess.PREPROCESS_VERSION}.npz"


def _keys_array(keys) -> np.ndarray:
    return np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 32).copy() if keys \
        else np.zeros((0, 32), np.uint8)


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def load_dataset(source=None, data_dir=None, image_size=64, protocol="original", seed=0,
                 cache_dir=None, tfds_data_dir=None, log=print) -> Dataset:
    """Load (from cache, or build and cache) the preprocessed Horses or Humans dataset.

    source: "tfds" | "folder" | "embedded" | "synthetic" | "archive" | None (automatic:
    data_dir -> folder; else $XFBENCH_DATA_DIR -> folder; else a prepared TFDS copy; else
    the copy shipped in the repository where it has `image_size`; else TFDS if downloadable
    (3 s probe); else synthetic, announced loudly). An explicit source never falls back.
    Raises DataError on any bad input.
    """
    if log is None:
        log = lambda *a, **k: None  # noqa: E731
    image_size = preprocess.check_image_size(image_size)
    protocol = protocols.check_protocol(protocol)
    seed = protocols.check_seed(seed)
    t0 = time.perf_counter()
    choice = resolve_source(source, data_dir, tfds_data_dir, log, image_size)
    log(f"[data] source: {choice.source} ({choice.reason})")
    carried = choice.source in ("archive", "embedded")  # read as it is, never rebuilt or cached
    if carried:
        path = choice.root
        hit = archive.read(path, image_size, preprocess.PREPROCESS_VERSION)
    else:
        path = cache.ensure_dir(cache_dir) / _cache_name(choice, image_size)
        expect = {"format": cache.FORMAT, "source": choice.source, "image_size": image_size,
                  "preprocess_version": preprocess.PREPROCESS_VERSION, "source_digest": choice.digest}
        hit = cache.load(path, expect, log)
    if hit is not None:
        arrays, meta = hit
        raw = sources.Raw(
            images={"train": arrays["x_train"], "test": arrays["x_test"]},
            labels={"train": arrays["y_train"], "test": arrays["y_test"]},
            keys={s: [bytes(k) for k in arrays[f"k_{s}"]] for s in ("train", "test")},
            detail=meta.get("source_detail", choice.detail))
        base_fp = meta["fingerprint"]
        from_cache = True
        if carried:  # results name where the pixels came from
            kind = "embedded copy" if choice.source == "embedded" else "archive"
            choice = _Choice("embedded" if choice.source == "embedded" else meta["source"], choice.reason,
                             notice=choice.notice, digest=meta["source_digest"], detail=f"{kind} {choice.detail} of {raw.detail}")
            raw.detail = choice.detail
    else:
        if choice.source == "folder":
            raw = sources.load_folder(choice.root, choice.listing, image_size, log)
        elif choice.source == "tfds":
            raw = sources.load_tfds(image_size, tfds_data_dir, log)
        else:
            raw = sources.load_synthetic(image_size, log)
        raw = sources.canonical_order(raw)
        arrays = {"x_train": raw.images["train"], "y_train": raw.labels["train"],
                  "x_test": raw.images["test"], "y_test": raw.labels["test"],
                  "k_train": _keys_array(raw.keys["train"]), "k_test": _keys_array(raw.keys["test"])}
        base_fp = cache.fingerprint(*(arrays[k] for k in cache.ARRAYS))
        meta = dict(expect, fingerprint=base_fp, keys_sha256=cache.keys_digest(arrays),
                    source_detail=choice.detail, class_names=list(CLASS_NAMES))
        cache.save(path, arrays, meta, log)
        from_cache = False
    detail = raw.detail if from_cache else choice.detail
    x_train, y_train, x_test, y_test = protocols.apply(raw, protocol, seed)
    fp = base_fp if protocol == "original" else cache.fingerprint(x_train, y_train, x_test, y_test)
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    ds = Dataset(
        x_train=_readonly(arrays["x_train"]), y_train=_readonly(arrays["y_train"]),
        x_test=_readonly(arrays["x_test"]), y_test=_readonly(arrays["y_test"]),
        source=choice.source, source_detail=detail, protocol=protocol, image_size=image_size, seed=seed,
        fingerprint=fp, cache_path=str(path), from_cache=from_cache, class_names=CLASS_NAMES,
        source_reason=choice.reason, notice=choice.notice,
    )
    c = ds.split_counts()
    log(f"[data] {ds.source} {protocol} {image_size}px: train {len(ds.y_train)} "
        f"({c['train']['horses']} horses/{c['train']['humans']} humans), test {len(ds.y_test)} "
        f"({c['test']['horses']}/{c['test']['humans']}); fingerprint {fp[:16]}; "
        f"{'read' if carried else 'cache hit' if from_cache else 'built'} {path} in {time.perf_counter() - t0:.2f}s")
    if ds.synthetic:
        log(f"[data] NOTE: {ds.notice}")
    return ds


def export_archive(ds: Dataset, out, log=print) -> Path:
    """A compact copy of `ds`'s images (all of them, before the protocol): `--source archive` reads it
    where the images are not. The shipped embedded copies are such exports of the image folder."""
    arrays, meta = archive.read(Path(ds.cache_path), ds.image_size, preprocess.PREPROCESS_VERSION)  # a cache reads as format 1
    return archive.write(Path(out), arrays, meta, log)
