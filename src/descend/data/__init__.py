"""Data: built-in datasets and user files, seeded stratified splits, feature scaling fitted on the training
split, and in-memory batches sliced on the device."""

from descend.data.batches import Batches
from descend.data.core import DataBundle, DatasetInfo, Split
from descend.data.load import check_options, datasets, describe, load
from descend.data.scaling import Scaler
from descend.data.splits import kfold_indices
from descend.data.user import from_user

__all__ = ["Batches", "DataBundle", "DatasetInfo", "Scaler", "Split", "check_options", "datasets", "describe",
           "from_user", "kfold_indices", "load"]
