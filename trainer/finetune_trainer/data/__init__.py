"""Training data: load rows (Hub or local files), render and tokenize them with a loss mask,
and measure batching waste. Importing this package is cheap: the datasets library loads
inside the functions that need it."""

from .batching import packed_fraction, padding_fraction, padding_report
from .loading import SUPPORTED_EXTENSIONS, load_rows
from .prepare import prepare_dataset
from .stats import DataStats, PreparedDataset

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "DataStats",
    "PreparedDataset",
    "load_rows",
    "packed_fraction",
    "padding_fraction",
    "padding_report",
    "prepare_dataset",
]
