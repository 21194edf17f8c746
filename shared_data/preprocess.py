"""Decode and resize: the ONE preprocessing method every source goes through.

Decode: PNG -> RGB uint8, alpha dropped (PIL ``Image.convert("RGB")``), which is
byte-for-byte what TFDS does (``tf.image.decode_png(channels=3)``).

Resize: PIL ``Image.resize((n, n), Image.Resampling.BILINEAR)`` on the full
300x300 RGB image. Pillow's bilinear filter is antialiased (its support widens
with the downscale factor), so downscaling does not alias. At n == 300 the image
is returned unchanged. Every source -- folder, TFDS and synthetic -- produces
native 300x300 RGB arrays first and then goes through :func:`resize` so the
method is identical for all of them.
"""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

NATIVE_SIZE = 300  # the Horses or Humans images (and TFDS's feature shape) are 300x300
RESIZE_METHOD = "PIL Image.resize BILINEAR (antialiased), from 300x300 RGB"
# Bump when decode/resize/order/synthetic generation changes: it is part of every cache key.
PREPROCESS_VERSION = 1

MIN_IMAGE_SIZE = 8
MAX_IMAGE_SIZE = 1024


def check_image_size(image_size) -> int:
    from .errors import DataError

    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)):
        raise DataError(
            f"image_size must be an integer between {MIN_IMAGE_SIZE} and {MAX_IMAGE_SIZE}, "
            f"got {image_size!r}; pass e.g. --image-size 64")
    image_size = int(image_size)
    if not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        raise DataError(
            f"image_size {image_size} is out of range; pass --image-size between "
            f"{MIN_IMAGE_SIZE} and {MAX_IMAGE_SIZE} (the images are {NATIVE_SIZE}x{NATIVE_SIZE})")
    return image_size


def content_key(rgb: np.ndarray) -> bytes:
    """Digest of the native decoded pixels; sorts examples into a source-independent order."""
    return hashlib.sha256(np.ascontiguousarray(rgb).tobytes()).digest()


def resize(rgb: np.ndarray, image_size: int) -> np.ndarray:
    """Resize a native (300, 300, 3) uint8 RGB array to (image_size, image_size, 3)."""
    if rgb.shape[0] == image_size and rgb.shape[1] == image_size:
        return np.ascontiguousarray(rgb, dtype=np.uint8)
    im = Image.fromarray(rgb)
    out = im.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(out, dtype=np.uint8)
