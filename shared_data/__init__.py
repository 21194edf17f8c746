"""shared_data: images -> cached uint8 arrays -> batches, identical for every framework.

    from shared_data import load_dataset, Dataset, epoch_batches, DataError
    ds = load_dataset(source=None, data_dir=None, image_size=64, protocol="original", seed=0,
                      cache_dir=None, tfds_data_dir=None, log=print)
    for batch in epoch_batches(ds.x_train, ds.y_train, 32, seed=0, epoch=0, augment=True):
        batch["image"]  # uint8 (32, 64, 64, 3); batch["label"]  # int32 (32,)

Labels: horses=0, humans=1 (TFDS order). Preprocessing: decode to RGB (alpha dropped,
as TFDS), PIL bilinear (antialiased) resize from 300x300; see the submodules' docs.
"""

from .batches import epoch_batches, num_batches
from .dataset import Dataset, load_dataset
from .errors import DataError
from .sources import CLASS_NAMES

__all__ = ["load_dataset", "Dataset", "epoch_batches", "num_batches", "DataError", "CLASS_NAMES"]
