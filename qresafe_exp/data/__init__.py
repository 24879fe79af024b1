"""Dataset registry and loaders (public source + optional local copy)."""

from qresafe_exp.data.registry import DATASETS, DatasetNotFoundError, load_records

__all__ = ["DATASETS", "DatasetNotFoundError", "load_records"]
