"""`xfbench data`: prepare (or reuse) the preprocessed dataset cache and summarise it."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

from .errors import DataError
from .preprocess import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE


def bounded(kind=int, low: float | None = None, high: float | None = None, *, low_open: bool = False):
    """An argparse `type=`: a `kind` (int or float) in [low, high], or (low, high] with low_open.

    Every xfbench subcommand validates its numbers with it, so a bad value ends the same way:
    `xfbench CMD: error: argument --option: '0' is out of range; pass 8..1024`, exit status 2.
    """
    def show(x) -> str:
        return str(x) if kind is int else f"{x:g}"

    if low is not None and high is not None and not low_open:
        allowed = f"{show(low)}..{show(high)}"
    else:
        allowed = " and ".join(part for part in (
            None if low is None else f"{'>' if low_open else '>='} {show(low)}",
            None if high is None else f"<= {show(high)}") if part)
    noun = "an integer" if kind is int else "a number"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}; pass {noun} {allowed}".rstrip()) from None
        if math.isnan(value) or (low is not None and (value <= low if low_open else value < low)) \
                or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text!r} is out of range; pass {noun} {allowed}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in some messages
    return parse


image_size_arg = bounded(int, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)  # a square side after resizing
seed_arg = bounded(int, 0, 2**32 - 1)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", choices=("tfds", "folder", "embedded", "synthetic", "archive"), default=None,
                        help="where the images come from (default: --data-dir / $XFBENCH_DATA_DIR folder, else a "
                             "prepared TFDS copy, else the copy shipped in the repository at 32 and 64 px, else a "
                             "TFDS download, else synthetic with a loud notice)")
    parser.add_argument("--data-dir", default=None, metavar="DIR",
                        help="folder with {train,validation}/{horses,humans}/*.png (implies --source folder)")
    parser.add_argument("--tfds-data-dir", default=None, metavar="DIR", help="TFDS data_dir (default: TFDS's own)")
    parser.add_argument("--image-size", type=image_size_arg, default=64, metavar="N",
                        help=f"square side after resizing, {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE} (default 64)")
    parser.add_argument("--protocol", choices=("original", "resplit"), default="original",
                        help="original: TFDS train/test; resplit: stratified seeded re-split, same sizes")
    parser.add_argument("--seed", type=seed_arg, default=0, help="seed of the resplit (default 0)")
    parser.add_argument("--cache-dir", default=None, metavar="DIR",
                        help="cache folder (default: $XFBENCH_CACHE_DIR or ./.xfbench/cache)")
    parser.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    parser.add_argument("--export", default=None, metavar="FILE",
                        help="also write a compact archive of the dataset (lossless WebP; read it with --source archive --data-dir FILE)")


def run(args: argparse.Namespace) -> int:
    from .dataset import load_dataset  # keep `xfbench --help` light

    def log(*parts, **_):
        print(*parts, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    try:
        ds = load_dataset(source=args.source, data_dir=args.data_dir, image_size=args.image_size,
                          protocol=args.protocol, seed=args.seed, cache_dir=args.cache_dir,
                          tfds_data_dir=getattr(args, "tfds_data_dir", None), log=log)
    except DataError as exc:
        print(f"xfbench data: error: {exc}", file=sys.stderr)
        return 2
    summary = ds.summary()
    if args.export:
        from .dataset import export_archive

        try:
            summary["export"] = str(export_archive(ds, args.export, log))
        except DataError as exc:
            print(f"xfbench data: error: {exc}", file=sys.stderr)
            return 2
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        s = summary["splits"]
        print(f"source      {summary['source']} ({summary['source_reason']})")
        if summary["notice"]:
            print(f"NOTICE      {summary['notice']}")
        print(f"detail      {summary['source_detail']}")
        print(f"protocol    {summary['protocol']} (seed {summary['seed']}), {summary['image_size']}px, {summary['resize']}")
        for split in ("train", "test"):
            print(f"{split:<11} {sum(s[split].values())} images: " + ", ".join(f"{k} {v}" for k, v in s[split].items()))
        print(f"fingerprint {summary['fingerprint']}")
        print(f"cache       {summary['cache_path']} ({'reused' if summary['from_cache'] else 'written'}), "
              f"{summary['seconds']:.2f}s")
    return 0
