"""Tests of shared_data: sources, preprocessing, cache, protocols, batches and the CLI.

CPU only and small: every bad-input and cache test runs on a tiny folder of PNGs the
tests draw themselves (2 per class folder, 300x300 RGBA like the originals); the
protocol tests run on the real images the repository ships (shared_data/embedded).
Tests that need the full real folder (../shared/datasets/horse-or-human from the
repo root, or $XFBENCH_DATA_DIR: the counts, TFDS's decode, the embedded copies'
fingerprints) skip without it, and fail under XFBENCH_REQUIRE_ALL=1, as CI runs them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import shared_data
from shared_data import DataError, Dataset, epoch_batches, load_dataset
from shared_data import archive, batches, cache, cli, preprocess, sources

import prerequisites

SPLIT_DIRS = {"train": "train", "test": "validation"}


def _quiet(*_a, **_k):
    pass


class _Log(list):
    def __call__(self, *parts, **_):
        self.append(" ".join(str(p) for p in parts))

    @property
    def text(self):
        return "\n".join(self)


@pytest.fixture(scope="session")
def real_dir() -> Path:
    return prerequisites.found("real_dir")


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("real_cache")


@pytest.fixture(scope="session")
def real16(real_dir, real_cache) -> Dataset:
    return load_dataset(source="folder", data_dir=real_dir, image_size=16, cache_dir=real_cache, log=_quiet)


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch):
    # The automatic source choice reads these; each test sets what it needs.
    monkeypatch.delenv("XFBENCH_DATA_DIR", raising=False)
    monkeypatch.delenv("XFBENCH_CACHE_DIR", raising=False)


def make_tiny(dest: Path, per_class: int = 2) -> Path:
    """The archive layout with `per_class` drawn PNGs per class folder: 300x300 RGBA, as the originals."""
    for split, sub in SPLIT_DIRS.items():
        for label, cls in enumerate(sources.CLASS_NAMES):
            (dest / sub / cls).mkdir(parents=True)
            for i in range(per_class):
                rgb = sources.synthetic_image(split, i, label)
                alpha = np.full(rgb.shape[:2] + (1,), 255, np.uint8)
                Image.fromarray(np.concatenate([rgb, alpha], axis=-1)).save(dest / sub / cls / f"{cls}{i:02d}.png")
    return dest


@pytest.fixture(scope="session")
def tiny_original(tmp_path_factory) -> Path:
    return make_tiny(tmp_path_factory.mktemp("tiny") / "hoh")


@pytest.fixture
def tiny(tiny_original, tmp_path) -> Path:
    """A fresh copy per test: the bad-input tests damage it."""
    return Path(shutil.copytree(tiny_original, tmp_path / "hoh"))


@pytest.fixture(scope="session")
def embedded32() -> Dataset:
    return load_dataset(source="embedded", image_size=32, log=_quiet)


# ----------------------------------------------------------------------------- real data


def test_real_counts_shapes_and_labels(real16):
    ds = real16
    assert ds.source == "folder" and ds.protocol == "original" and not ds.from_cache
    assert ds.x_train.shape == (1027, 16, 16, 3) and ds.x_test.shape == (256, 16, 16, 3)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int32 and ds.y_test.dtype == np.int32
    assert ds.split_counts() == {"train": {"horses": 500, "humans": 527}, "test": {"horses": 128, "humans": 128}}
    assert ds.class_names == ("horses", "humans")
    assert len(ds.fingerprint) == 64 and int(ds.fingerprint, 16) >= 0
    assert ds.fingerprint == cache.fingerprint(ds.x_train, ds.y_train, ds.x_test, ds.y_test)
    assert not ds.x_train.flags.writeable  # every consumer shares the same bytes
    s = ds.summary()
    assert s["splits"]["train"] == {"horses": 500, "humans": 527} and s["synthetic"] is False
    json.dumps(s)


def test_labels_follow_folders(tiny):
    """horses=0, humans=1: a horse PNG decodes into the label-0 block."""
    key, _ = sources.decode_png(sorted((tiny / "train/horses").glob("*.png"))[0], 16)
    listing, _ = sources.scan_folder(tiny)
    assert listing["train"][0][1] == 0 and listing["train"][-1][1] == 1
    assert len(key) == 32


def test_reload_is_cache_hit_with_same_fingerprint(real16, real_dir, real_cache):
    again = load_dataset(source="folder", data_dir=real_dir, image_size=16, cache_dir=real_cache, log=_quiet)
    assert again.from_cache and again.fingerprint == real16.fingerprint
    assert again.cache_path == real16.cache_path
    np.testing.assert_array_equal(again.x_train, real16.x_train)
    np.testing.assert_array_equal(again.y_test, real16.y_test)


def test_decode_matches_tfds_byte_for_byte(real_dir):
    """PIL convert("RGB") == tf.io.decode_png(channels=3), which is what TFDS decodes with."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    files = []
    for split in SPLIT_DIRS.values():
        for cls in sources.CLASS_NAMES:
            names = sorted((real_dir / split / cls).glob("*.png"))
            files += [names[0], names[len(names) // 2], names[-1]]
    for f in files:
        _, ours = sources.decode_png(f, preprocess.NATIVE_SIZE)
        theirs = tf.io.decode_png(tf.io.read_file(str(f)), channels=3).numpy()
        assert ours.dtype == theirs.dtype == np.uint8
        assert ours.shape == theirs.shape == (300, 300, 3)
        assert np.array_equal(ours, theirs), f


def test_resize_is_pil_bilinear_and_identity_at_native(tiny):
    f = sorted((tiny / "train/humans").glob("*.png"))[0]
    rgb = np.asarray(Image.open(f).convert("RGB"))
    assert np.array_equal(preprocess.resize(rgb, 300), rgb)
    want = np.asarray(Image.fromarray(rgb).resize((32, 32), Image.Resampling.BILINEAR))
    assert np.array_equal(preprocess.resize(rgb, 32), want)
    _, got = sources.decode_png(f, 32)
    assert np.array_equal(got, want)


def test_resplit_stratified_seeded_same_pool(embedded32):
    orig = embedded32

    def resplit(seed):
        return load_dataset(source="embedded", image_size=32, protocol="resplit", seed=seed, log=_quiet)

    r0, r0b, r1 = resplit(0), resplit(0), resplit(1)
    for r in (r0, r1):
        assert r.split_counts() == {"train": {"horses": 500, "humans": 527}, "test": {"horses": 128, "humans": 128}}
        # same pool of images, just divided differently
        pooled = np.concatenate([r.x_train, r.x_test]).reshape(1283, -1)
        assert sorted(map(bytes, pooled)) == sorted(map(bytes, np.concatenate([orig.x_train, orig.x_test]).reshape(1283, -1)))
        assert np.all(np.diff(r.y_train) >= 0) and np.all(np.diff(r.y_test) >= 0)  # canonical order
    assert r0.fingerprint == r0b.fingerprint
    assert len({r0.fingerprint, r1.fingerprint, orig.fingerprint}) == 3
    test0 = set(map(bytes, r0.x_test.reshape(256, -1)))
    test1 = set(map(bytes, r1.x_test.reshape(256, -1)))
    assert test0 != test1 and test0 != set(map(bytes, orig.x_test.reshape(256, -1)))


# ----------------------------------------------------------------------------- order and determinism


def test_order_is_independent_of_file_names(tiny, tmp_path):
    """Canonical (label, content) order: renamed files give identical bytes and fingerprint."""
    a = load_dataset(source="folder", data_dir=tiny, image_size=16, cache_dir=tmp_path / "c1", log=_quiet)
    renamed = tmp_path / "renamed"
    shutil.copytree(tiny, renamed)
    for f in renamed.glob("*/*/*.png"):
        f.rename(f.with_name("z" + f.stem[::-1] + ".png"))
    b = load_dataset(source="folder", data_dir=renamed, image_size=16, cache_dir=tmp_path / "c1", log=_quiet)
    assert not b.from_cache  # different folder -> different cache key
    assert a.fingerprint == b.fingerprint
    assert a.x_train.shape == (4, 16, 16, 3) and list(a.y_train) == [0, 0, 1, 1]


def test_fingerprint_covers_labels_and_shapes():
    x = np.zeros((2, 4, 4, 3), np.uint8)
    y = np.array([0, 1], np.int32)
    base = cache.fingerprint(x, y, x, y)
    assert cache.fingerprint(x, y[::-1].copy(), x, y) != base
    assert cache.fingerprint(x.reshape(2, 2, 8, 3), y, x, y) != base
    assert cache.fingerprint(x, y.astype(np.int64), x, y) != base
    assert cache.fingerprint(x, y, x, y) == base


# ----------------------------------------------------------------------------- epoch batches


def _toy(n=10, size=8):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), (np.arange(n) % 2).astype(np.int32)


def test_epoch_order_and_last_batch_rule():
    x, y = _toy(10)
    got = list(epoch_batches(x, y, 4, seed=3, epoch=1))
    assert [b["image"].shape[0] for b in got] == [4, 4]  # drop_last=True drops the partial batch
    perm = np.random.default_rng((3, 1)).permutation(10)
    np.testing.assert_array_equal(np.concatenate([b["image"] for b in got]), x[perm[:8]])
    assert all(b["image"].dtype == np.uint8 and b["label"].dtype == np.int32 for b in got)
    ev = list(epoch_batches(x, y, 4, seed=3, epoch=1, shuffle=False, drop_last=False))
    assert [b["image"].shape[0] for b in ev] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in ev]), y)
    assert batches.num_batches(10, 4, True) == 2 and batches.num_batches(10, 4, False) == 3


def test_epoch_determinism_and_seed_dependence():
    x, y = _toy(32)

    def labels(**kw):
        return np.concatenate([b["image"][:, 0, 0, 0] for b in epoch_batches(x, y, 8, **kw)])

    assert np.array_equal(labels(seed=0, epoch=0), labels(seed=0, epoch=0))
    assert not np.array_equal(labels(seed=0, epoch=0), labels(seed=1, epoch=0))
    assert not np.array_equal(labels(seed=0, epoch=0), labels(seed=0, epoch=1))


def test_augmentation_flip_and_shift_semantics():
    img = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(1, 4, 5, 3)
    np.testing.assert_array_equal(batches.apply_augmentation(img, [True], [0], [0]), img[:, :, ::-1])
    np.testing.assert_array_equal(batches.apply_augmentation(img, [False], [0], [0]), img)
    shifted = batches.apply_augmentation(img, [False], [1], [2])
    np.testing.assert_array_equal(shifted[0, 1:, 2:], img[0, :-1, :-2])  # content moves down/right
    np.testing.assert_array_equal(shifted[0, 0, 2:], img[0, 0, :-2])  # top row repeats the edge
    np.testing.assert_array_equal(shifted[0, 1:, 0], img[0, :-1, 0])  # left column repeats the edge


def test_augmentation_deterministic_and_batch_size_independent():
    x, y = _toy(24, size=20)

    def run(bs, **kw):
        out = list(epoch_batches(x, y, bs, seed=5, epoch=2, augment=True, **kw))
        return np.concatenate([b["image"] for b in out]), np.concatenate([b["label"] for b in out])

    a, la = run(8)
    b, lb = run(6)
    np.testing.assert_array_equal(a, b)  # same example -> same augmentation, whatever the batch size
    np.testing.assert_array_equal(la, lb)
    np.testing.assert_array_equal(a, run(8)[0])
    plain = np.concatenate([b["image"] for b in epoch_batches(x, y, 8, seed=5, epoch=2)])
    assert not np.array_equal(a, plain) and a.shape == plain.shape and a.dtype == np.uint8
    other_epoch = np.concatenate([b["image"] for b in epoch_batches(x, y, 8, seed=5, epoch=3, augment=True,
                                                                   shuffle=False)])
    same_epoch = np.concatenate([b["image"] for b in epoch_batches(x, y, 8, seed=5, epoch=2, augment=True,
                                                                  shuffle=False)])
    assert not np.array_equal(other_epoch, same_epoch)
    flip, dy, dx = batches.augment_params(1000, 64, seed=0, epoch=0)
    assert 0.4 < flip.mean() < 0.6 and dy.min() == -6 and dy.max() == 6 and np.abs(dx).max() == 6


def test_epoch_batches_bad_arguments():
    x, y = _toy(5)
    with pytest.raises(DataError, match="batch_size 8 exceeds the 5 examples"):
        list(epoch_batches(x, y, 8, seed=0, epoch=0))
    assert [b["image"].shape[0] for b in epoch_batches(x, y, 8, seed=0, epoch=0, drop_last=False)] == [5]
    with pytest.raises(DataError, match="batch_size"):
        list(epoch_batches(x, y, 0, seed=0, epoch=0))
    with pytest.raises(DataError, match="uint8"):
        list(epoch_batches(x.astype(np.float32), y, 2, seed=0, epoch=0))
    with pytest.raises(DataError, match="labels shape"):
        list(epoch_batches(x, y[:3], 2, seed=0, epoch=0))


# ----------------------------------------------------------------------------- cache


def _load_tiny(tiny, cdir, **kw):
    log = _Log()
    ds = load_dataset(source="folder", data_dir=tiny, image_size=16, cache_dir=cdir, log=log, **kw)
    return ds, log


def test_cache_truncated_is_detected_and_rebuilt(tiny, tmp_path):
    first, _ = _load_tiny(tiny, tmp_path / "c")
    path = Path(first.cache_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    again, log = _load_tiny(tiny, tmp_path / "c")
    assert not again.from_cache and again.fingerprint == first.fingerprint
    assert "unreadable" in log.text and str(path) in log.text and "rebuilding" in log.text
    third, _ = _load_tiny(tiny, tmp_path / "c")
    assert third.from_cache and third.fingerprint == first.fingerprint


def test_cache_flipped_bytes_are_detected_and_rebuilt(tiny, tmp_path):
    first, _ = _load_tiny(tiny, tmp_path / "c")
    path = Path(first.cache_path)
    data = bytearray(path.read_bytes())
    mid = data.find(b"x_train.npy") + 400  # inside x_train's pixels
    for i in range(mid, mid + 16):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    again, log = _load_tiny(tiny, tmp_path / "c")
    assert not again.from_cache and again.fingerprint == first.fingerprint
    assert "rebuilding" in log.text and str(path) in log.text


def test_cache_with_stale_fingerprint_is_rebuilt(tiny, tmp_path):
    """A well-formed zip whose arrays no longer match the recorded fingerprint."""
    first, _ = _load_tiny(tiny, tmp_path / "c")
    path = Path(first.cache_path)
    with np.load(path) as z:
        parts = {k: z[k].copy() for k in z.files}
    parts["x_train"][0, 0, 0, 0] ^= 1
    with open(path, "wb") as f:
        np.savez(f, **parts)
    again, log = _load_tiny(tiny, tmp_path / "c")
    assert not again.from_cache and again.fingerprint == first.fingerprint
    assert "corrupt (fingerprint" in log.text


def test_cache_writes_are_atomic_and_concurrent_loads_agree(tiny, tmp_path):
    cdir = tmp_path / "c"
    results, errors = [], []

    def work():
        try:
            results.append(load_dataset(source="folder", data_dir=tiny, image_size=16, cache_dir=cdir,
                                        log=_quiet).fingerprint)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1
    assert [p.suffix for p in cdir.iterdir()] == [".npz"]  # no temp file left behind


def test_default_cache_dir_env_and_cwd(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("XFBENCH_CACHE_DIR", str(tmp_path / "envcache"))
    ds = load_dataset(data_dir=tiny, image_size=8, log=_quiet)
    assert Path(ds.cache_path).parent == tmp_path / "envcache"
    monkeypatch.delenv("XFBENCH_CACHE_DIR")
    monkeypatch.chdir(tmp_path)
    ds = load_dataset(data_dir=tiny, image_size=8, log=_quiet)
    assert Path(ds.cache_path).parent == tmp_path / ".xfbench" / "cache"


def test_changed_file_invalidates_cache(tiny, tmp_path):
    first, _ = _load_tiny(tiny, tmp_path / "c")
    victim = sorted((tiny / "train/horses").glob("*.png"))[0]
    Image.open(victim).convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(victim)
    again, _ = _load_tiny(tiny, tmp_path / "c")
    assert not again.from_cache and again.fingerprint != first.fingerprint


# ----------------------------------------------------------------------------- bad inputs


def _expect_error(match_parts, **kw):
    kw.setdefault("image_size", 8)
    kw.setdefault("log", _quiet)
    with pytest.raises(DataError) as info:
        load_dataset(**kw)
    msg = str(info.value)
    for part in match_parts:
        assert str(part) in msg, (part, msg)
    return msg


def test_bad_missing_folder(tmp_path):
    _expect_error([tmp_path / "nope", "does not exist", "--data-dir"], source="folder", data_dir=tmp_path / "nope",
                  cache_dir=tmp_path / "c")


def test_bad_missing_split_folder(tiny, tmp_path):
    shutil.rmtree(tiny / "validation")
    _expect_error(["validation/", str(tiny), "unpack"], source="folder", data_dir=tiny, cache_dir=tmp_path / "c")


def test_bad_parent_folder_gets_a_hint(tiny, tmp_path):
    _expect_error(["did you mean", str(tiny)], data_dir=tiny.parent, cache_dir=tmp_path / "c")


def test_bad_missing_class_folder(tiny, tmp_path):
    shutil.rmtree(tiny / "train/humans")
    _expect_error([tiny / "train/humans", "missing"], data_dir=tiny, cache_dir=tmp_path / "c")


def test_bad_extra_class_folder(tiny, tmp_path):
    (tiny / "train/dogs").mkdir()
    _expect_error([tiny / "train/dogs", "not a class folder"], data_dir=tiny, cache_dir=tmp_path / "c")


def test_bad_empty_class_folder(tiny, tmp_path):
    for f in (tiny / "validation/horses").iterdir():
        f.unlink()
    _expect_error([tiny / "validation/horses", "no .png"], data_dir=tiny, cache_dir=tmp_path / "c")


def test_bad_non_png_file(tiny, tmp_path):
    (tiny / "train/horses/notes.txt").write_text("hello")
    _expect_error([tiny / "train/horses/notes.txt", "not a .png", "remove it"], data_dir=tiny,
                  cache_dir=tmp_path / "c")


def test_hidden_files_are_ignored(tiny, tmp_path):
    (tiny / "train/horses/.DS_Store").write_bytes(b"\0\1")
    ds = load_dataset(data_dir=tiny, image_size=8, cache_dir=tmp_path / "c", log=_quiet)
    assert ds.x_train.shape[0] == 4


def test_bad_text_file_named_png(tiny, tmp_path):
    (tiny / "train/humans/fake.png").write_text("not an image")
    _expect_error([tiny / "train/humans/fake.png", "not a readable image"], data_dir=tiny, cache_dir=tmp_path / "c")


def test_bad_truncated_png(tiny, tmp_path):
    victim = sorted((tiny / "validation/humans").glob("*.png"))[0]
    victim.write_bytes(victim.read_bytes()[:5000])
    _expect_error([victim, "cannot be decoded", "truncated", "replace it"], data_dir=tiny, cache_dir=tmp_path / "c")


def test_bad_corrupt_png_data(tiny, tmp_path):
    victim = sorted((tiny / "train/horses").glob("*.png"))[1]
    data = bytearray(victim.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 64):
        data[i] ^= 0x5A
    victim.write_bytes(bytes(data))
    _expect_error([victim, "replace it"], data_dir=tiny, cache_dir=tmp_path / "c")


def test_bad_jpeg_named_png(tiny, tmp_path):
    victim = sorted((tiny / "train/horses").glob("*.png"))[0]
    Image.open(victim).convert("RGB").save(victim, format="JPEG")
    _expect_error([victim, "not a PNG", "JPEG"], data_dir=tiny, cache_dir=tmp_path / "c")


def test_bad_wrong_size_png(tiny, tmp_path):
    victim = sorted((tiny / "train/humans").glob("*.png"))[0]
    Image.open(victim).resize((100, 120)).save(victim)
    _expect_error([victim, "100x120", "300x300"], data_dir=tiny, cache_dir=tmp_path / "c")


def test_bad_options(tiny, tmp_path):
    c = tmp_path / "c"
    _expect_error(["unknown source 'kaggle'", "--source"], source="kaggle", cache_dir=c)
    _expect_error(["out of range", "--image-size"], data_dir=tiny, image_size=4, cache_dir=c)
    _expect_error(["out of range"], data_dir=tiny, image_size=5000, cache_dir=c)
    _expect_error(["integer"], data_dir=tiny, image_size="64", cache_dir=c)
    _expect_error(["unknown protocol 'kfold'", "--protocol"], data_dir=tiny, protocol="kfold", cache_dir=c)
    _expect_error(["seed", "non-negative"], data_dir=tiny, seed=-1, cache_dir=c)
    _expect_error(["--data-dir", "XFBENCH_DATA_DIR"], source="folder", cache_dir=c)
    _expect_error(["--tfds-data-dir"], source="tfds", data_dir=tiny, cache_dir=c)
    _expect_error(["--source synthetic"], source="synthetic", data_dir=tiny, cache_dir=c)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _expect_error([blocker, "--cache-dir"], data_dir=tiny, cache_dir=blocker / "sub")


def test_bad_env_data_dir_raises_not_falls_back(tmp_path, monkeypatch):
    monkeypatch.setenv("XFBENCH_DATA_DIR", str(tmp_path / "gone"))
    _expect_error([tmp_path / "gone", "does not exist"], cache_dir=tmp_path / "c")


# ----------------------------------------------------------------------------- source choice


def test_auto_source_prefers_data_dir_then_env(tiny, tmp_path, monkeypatch):
    log = _Log()
    ds = load_dataset(data_dir=tiny, image_size=8, cache_dir=tmp_path / "c", log=log)
    assert ds.source == "folder" and "--data-dir given" in ds.source_reason and "source: folder" in log.text
    monkeypatch.setenv("XFBENCH_DATA_DIR", str(tiny))
    ds = load_dataset(image_size=8, cache_dir=tmp_path / "c", log=_quiet)
    assert ds.source == "folder" and "XFBENCH_DATA_DIR" in ds.source_reason and ds.from_cache


@pytest.fixture
def small_synthetic(monkeypatch):
    monkeypatch.setattr(sources, "COUNTS", {"train": {"horses": 6, "humans": 7}, "test": {"horses": 3, "humans": 3}})


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """TFDS not prepared in an empty data dir, and the download host refuses at once."""
    import socket

    with socket.socket() as s:  # a port nobody listens on: connect is refused immediately
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(sources, "PROBE_URL", f"https://127.0.0.1:{port}/validation-horse-or-human.zip")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds_empty"))
    return tmp_path / "tfds_empty"


def test_auto_falls_back_to_synthetic_loudly(offline, small_synthetic, tmp_path):
    log = _Log()
    ds = load_dataset(image_size=8, cache_dir=tmp_path / "c", log=log)
    assert ds.source == "synthetic" and ds.synthetic
    assert "FALLBACK" in ds.source_reason and "SYNTHETIC DATA" in ds.notice
    assert "!!!!!!!!" in log.text and "SYNTHETIC DATA" in log.text
    s = ds.summary()
    assert s["synthetic"] is True and s["source"] == "synthetic" and "FALLBACK" in s["source_reason"]
    assert ds.split_counts() == {"train": {"horses": 6, "humans": 7}, "test": {"horses": 3, "humans": 3}}


def test_explicit_tfds_offline_fails_fast_naming_offline_options(offline, tmp_path):
    t0 = time.perf_counter()
    msg = _expect_error(["not prepared", "cannot be downloaded", "--source folder --data-dir",
                         "XFBENCH_DATA_DIR", "--source synthetic"], source="tfds", cache_dir=tmp_path / "c")
    assert time.perf_counter() - t0 < 10, msg


def test_probe_is_bounded_in_time():
    """A host that accepts the connection but never answers (what tfds would hang on)."""
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)  # never accepted: the TCP connect succeeds, the request hangs
        port = server.getsockname()[1]
        t0 = time.perf_counter()
        ok, why = sources.probe_download(f"https://127.0.0.1:{port}/x", timeout=0.5)
        elapsed = time.perf_counter() - t0
    assert not ok and f"127.0.0.1:{port}" in why
    assert elapsed < 3


def test_tfds_prepared_check(tmp_path):
    assert sources.tfds_prepared(tmp_path) is None
    (tmp_path / "horses_or_humans/3.0.0").mkdir(parents=True)
    assert sources.tfds_prepared(tmp_path) is None  # half-written: no dataset_info.json yet
    (tmp_path / "horses_or_humans/3.0.0/dataset_info.json").write_text("{}")
    assert sources.tfds_prepared(tmp_path) == tmp_path / "horses_or_humans/3.0.0"


def test_synthetic_is_deterministic_learnable_and_labelled(small_synthetic, tmp_path):
    a = load_dataset(source="synthetic", image_size=16, cache_dir=tmp_path / "a", log=_quiet)
    b = load_dataset(source="synthetic", image_size=16, cache_dir=tmp_path / "b", log=_quiet)
    assert a.fingerprint == b.fingerprint and not b.from_cache
    assert a.source == "synthetic" and "SYNTHETIC" in a.notice and a.summary()["synthetic"] is True
    assert a.x_train.shape == (13, 16, 16, 3) and a.x_train.dtype == np.uint8
    # class signal: horses' object is wide, humans' tall -> an easy feature separates the classes
    img = sources.synthetic_image("train", 0, 0).astype(int), sources.synthetic_image("train", 0, 1).astype(int)
    assert img[0].shape == (300, 300, 3)
    r = load_dataset(source="synthetic", image_size=16, protocol="resplit", seed=2, cache_dir=tmp_path / "a",
                     log=_quiet)
    assert r.from_cache and r.split_counts() == a.split_counts()


def test_synthetic_full_size_split_counts(tmp_path):
    ds = load_dataset(source="synthetic", image_size=8, cache_dir=tmp_path, log=_quiet)
    assert ds.split_counts() == {"train": {"horses": 500, "humans": 527}, "test": {"horses": 128, "humans": 128}}
    # learnable: the mean image of each class differs clearly
    diff = np.abs(ds.x_train[ds.y_train == 0].mean(0) - ds.x_train[ds.y_train == 1].mean(0)).mean()
    assert diff > 5


def test_tfds_source_with_mock_data(tmp_path, monkeypatch):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow_datasets as tfds

    tfds_dir = tmp_path / "tfds"
    monkeypatch.setattr(sources, "tfds_prepared", lambda d=None: tfds_dir / "horses_or_humans/3.0.0")
    with tfds.testing.mock_data(num_examples=6):
        ds = load_dataset(source="tfds", tfds_data_dir=tfds_dir, image_size=16, cache_dir=tmp_path / "c", log=_quiet)
        direct = tfds.load("horses_or_humans", split=["train", "test"], data_dir=str(tfds_dir))
        examples = [list(tfds.as_numpy(d)) for d in direct]
    assert ds.source == "tfds" and "horses_or_humans" in ds.source_detail
    assert ds.x_train.shape == (6, 16, 16, 3) and ds.x_test.shape == (6, 16, 16, 3)
    assert ds.y_train.dtype == np.int32 and set(np.unique(ds.y_train)) <= {0, 1}
    # same bytes as decoding the TFDS examples ourselves, in canonical order
    exs = examples[0]
    order = sorted(range(len(exs)), key=lambda i: (int(exs[i]["label"]), preprocess.content_key(exs[i]["image"])))
    want = np.stack([preprocess.resize(exs[i]["image"], 16) for i in order])
    np.testing.assert_array_equal(ds.x_train, want)
    np.testing.assert_array_equal(ds.y_train, [int(exs[i]["label"]) for i in order])
    # and a warm load does not need TFDS at all
    again = load_dataset(source="tfds", tfds_data_dir=tfds_dir, image_size=16, cache_dir=tmp_path / "c", log=_quiet)
    assert again.from_cache and again.fingerprint == ds.fingerprint


# ----------------------------------------------------------------------------- CLI


def _cli(argv, capsys):
    parser = argparse.ArgumentParser(prog="xfbench data")
    cli.add_arguments(parser)
    rc = cli.run(parser.parse_args(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_json_is_one_object(embedded32, tmp_path, capsys):
    rc, out, err = _cli(["--source", "embedded", "--image-size", "32", "--cache-dir", str(tmp_path), "--json"], capsys)
    assert rc == 0
    assert out.count("\n") == 1 and out.endswith("\n")
    s = json.loads(out)
    for key in ("source", "protocol", "image_size", "seed", "splits", "fingerprint", "cache_path", "from_cache"):
        assert key in s
    assert s["source"] == "embedded" and s["image_size"] == 32 and s["from_cache"] is True
    assert s["splits"] == {"train": {"horses": 500, "humans": 527}, "test": {"horses": 128, "humans": 128}}
    assert s["fingerprint"] == embedded32.fingerprint
    assert "[data] source: embedded" in err  # logs go to stderr


def test_cli_human_output(tiny, tmp_path, capsys):
    rc, out, err = _cli(["--data-dir", str(tiny), "--image-size", "8", "--cache-dir", str(tmp_path / "c")], capsys)
    assert rc == 0 and "fingerprint" in out and "horses 2" in out


def test_cli_bad_input_is_one_line_without_traceback(tmp_path, capsys):
    rc, out, err = _cli(["--data-dir", str(tmp_path / "missing"), "--cache-dir", str(tmp_path / "c"), "--json"],
                        capsys)
    assert rc == 2 and out == ""
    lines = [line for line in err.splitlines() if line.startswith("xfbench data: error:")]
    assert len(lines) == 1 and str(tmp_path / "missing") in lines[0] and "Traceback" not in err


@pytest.mark.parametrize("argv", [["--image-size", "4"], ["--image-size", "big"], ["--source", "kaggle"],
                                  ["--protocol", "kfold"], ["--seed", "-3"]])
def test_cli_rejects_bad_options(argv, capsys):
    parser = argparse.ArgumentParser(prog="xfbench data")
    cli.add_arguments(parser)
    with pytest.raises(SystemExit) as info:
        parser.parse_args(argv)
    assert info.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_public_api_names():
    for name in ("load_dataset", "Dataset", "epoch_batches", "DataError"):
        assert hasattr(shared_data, name)
    assert issubclass(DataError, Exception)


def test_archive_travels_without_the_images(tiny, tmp_path):
    ds, _ = _load_tiny(tiny, tmp_path / "c")
    carried = shared_data.dataset.export_archive(ds, tmp_path / "carry" / "data.npz", _quiet)
    meta = json.loads(str(np.load(carried)["meta"]))
    assert meta["format"] == archive.FORMAT and meta["codec"] == "webp-lossless"
    assert not any(os.path.isabs(w) for w in meta["source_detail"].split())  # the archive travels
    shutil.rmtree(tiny)  # the images are gone, as on a GPU box
    back = load_dataset(source="archive", data_dir=str(carried), image_size=16, log=_quiet)
    assert back.fingerprint == ds.fingerprint and back.source == "folder"
    assert back.source_detail.startswith(f"archive {carried}")
    assert np.array_equal(back.x_train, ds.x_train) and np.array_equal(back.x_test, ds.x_test)
    with pytest.raises(DataError, match="made for image_size=16, not 32"):
        load_dataset(source="archive", data_dir=str(carried), image_size=32, log=_quiet)
    # an archive from before format 2 (the cache file itself) still reads, and the content keys
    # travel: both give the same resplit
    old = load_dataset(source="archive", data_dir=ds.cache_path, image_size=16, log=_quiet)
    assert old.fingerprint == ds.fingerprint

    def resplit(path):
        return load_dataset(source="archive", data_dir=str(path), image_size=16, protocol="resplit", log=_quiet)

    assert resplit(carried).fingerprint == resplit(ds.cache_path).fingerprint != ds.fingerprint
    carried.write_bytes(carried.read_bytes()[:1000])
    with pytest.raises(DataError, match=f"archive {carried} is unreadable"):
        load_dataset(source="archive", data_dir=str(carried), image_size=16, log=_quiet)


def test_archive_with_changed_pixels_is_refused_naming_it(tiny, tmp_path):
    ds, _ = _load_tiny(tiny, tmp_path / "c")
    path = shared_data.dataset.export_archive(ds, tmp_path / "a.npz", _quiet)
    with np.load(path) as z:
        parts = {k: z[k] for k in z.files}
    meta = json.loads(str(parts.pop("meta")))
    x = np.concatenate([ds.x_train, ds.x_test]).copy()
    x[0, 0, 0, 0] ^= 1  # one bit of one pixel, still a valid WebP
    parts["sheets"] = np.frombuffer(b"".join(archive.encode_sheets(x)), np.uint8)
    parts["sheet_sizes"] = np.asarray([len(b) for b in archive.encode_sheets(x)], np.int64)
    cache.save(path, parts, meta, _quiet)
    with pytest.raises(DataError, match=f"archive {path} is corrupt.*export it again"):
        load_dataset(source="archive", data_dir=str(path), image_size=16, log=_quiet)


@pytest.mark.parametrize("n, size", [(1, 8), (7, 16), (40, 300)])
def test_webp_sheets_round_trip_byte_exact(n, size):
    x = np.random.default_rng(n).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    sheets = archive.encode_sheets(x)
    assert np.array_equal(archive.decode_sheets(sheets, n, size), x)
    big = archive._tiles_per_side(1283, 1024)  # WebP's 16383 px limit: several sheets, never one too wide
    assert big * 1024 <= archive.MAX_SHEET_SIDE


# ----------------------------------------------------------------------------- the embedded copy


def test_embedded_copies_load_under_the_current_preprocessing():
    """A fresh clone reads the real images at 32 and 64 px: a preprocessing bump without a new
    export fails here, instead of quietly sending fresh clones back to synthetic data."""
    assert archive.embedded_sizes() == (32, 64)
    for size in archive.embedded_sizes():
        ds = load_dataset(source="embedded", image_size=size, log=_quiet)
        assert ds.source == "embedded" and not ds.synthetic and ds.notice == ""
        assert ds.x_train.shape == (1027, size, size, 3) and ds.x_test.shape == (256, size, size, 3)
        assert ds.split_counts() == {"train": {"horses": 500, "humans": 527}, "test": {"horses": 128, "humans": 128}}
        assert ds.source_detail == f"embedded copy shared_data/embedded/horses_or_humans-{size}px.npz of horse-or-human"
        with np.load(archive.embedded_path(size)) as z:
            meta = json.loads(str(z["meta"]))
        assert meta["preprocess_version"] == preprocess.PREPROCESS_VERSION and meta["fingerprint"] == ds.fingerprint
        strings = [v for v in meta.values() if isinstance(v, str)]
        assert not any(os.path.isabs(w) or "/root/" in w or "/home/" in w for v in strings for w in v.split())
    licence = (archive.EMBEDDED_DIR / "README.md").read_text()
    assert "Laurence Moroney" in licence and "CC BY 2.0" in licence


def test_auto_source_is_chosen_per_image_size(offline, small_synthetic, tmp_path):
    """Offline, nothing named: the embedded copy where it has the size, else synthetic, announced."""
    log = _Log()
    ds = load_dataset(image_size=64, cache_dir=tmp_path / "c", log=log)
    assert ds.source == "embedded" and "ship with the repository at 64 px" in ds.source_reason
    assert "!!!!" not in log.text and not ds.synthetic
    ds = load_dataset(image_size=48, cache_dir=tmp_path / "c", log=log)
    assert ds.source == "synthetic" and "32 and 64 px only, not at 48 px" in ds.notice and "!!!!" in log.text


def test_embedded_is_never_resampled_to_another_size(tmp_path):
    msg = _expect_error(["32, 64 px, not at 48 px", "never resampled", "--image-size 32 or 64", "--source folder"],
                        source="embedded", image_size=48, cache_dir=tmp_path)
    assert "Traceback" not in msg
    _expect_error(["--source embedded", "drop one"], source="embedded", data_dir=str(tmp_path), image_size=32)


def test_embedded_copies_equal_the_folder_at_their_sizes(real_dir, real_cache):
    """Byte-exact: at each embedded size the folder source gives the embedded copy's fingerprint,
    for both protocols."""
    for size, protocol in itertools.product(archive.embedded_sizes(), ("original", "resplit")):
        folder = load_dataset(source="folder", data_dir=real_dir, image_size=size, protocol=protocol,
                              cache_dir=real_cache, log=_quiet)
        embedded = load_dataset(source="embedded", image_size=size, protocol=protocol, log=_quiet)
        assert embedded.fingerprint == folder.fingerprint, protocol
        assert np.array_equal(embedded.x_train, folder.x_train) and np.array_equal(embedded.y_test, folder.y_test)
