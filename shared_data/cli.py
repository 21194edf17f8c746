"""`xfbench data`: prepare (or reuse) the preprocessed dataset cache and summarise it."""

from __future__ import annotations

import argparse
import json
import sys
import time

from .errors import DataError
from .preprocess import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE


def _image_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer; pass a side length such as 64") from None
    if not MIN_IMAGE_SIZE <= value <= MAX_IMAGE_SIZE:
        raise argparse.ArgumentTypeError(f"{value} is out of range; pass {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer; pass e.g. --seed 0") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; pass a non-negative integer")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", choices=("tfds", "folder", "synthetic", "archive"), default=None,
                        help="where the images come from (default: --data-dir / $XFBENCH_DATA_DIR folder, "
                             "else TFDS if prepared or downloadable, else synthetic with a loud notice)")
    parser.add_argument("--data-dir", default=None, metavar="DIR",
                        help="folder with {train,validation}/{horses,humans}/*.png (implies --source folder)")
    parser.add_argument("--tfds-data-dir", default=None, metavar="DIR", help="TFDS data_dir (default: TFDS's own)")
    parser.add_argument("--image-size", type=_image_size, default=64, metavar="N",
                        help=f"square side after resizing, {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE} (default 64)")
    parser.add_argument("--protocol", choices=("original", "resplit"), default="original",
                        help="original: TFDS train/test; resplit: stratified seeded re-split, same sizes")
    parser.add_argument("--seed", type=_seed, default=0, help="seed of the resplit (default 0)")
    parser.add_argument("--cache-dir", default=None, metavar="DIR",
                        help="cache folder (default: $XFBENCH_CACHE_DIR or ./.xfbench/cache)")
    parser.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    parser.add_argument("--export", default=None, metavar="FILE",
                        help="also write a compressed archive of the dataset (read it with --source archive --data-dir FILE)")


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
