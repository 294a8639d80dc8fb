"""What data preparation produced: the tokenized dataset and the counts that describe it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datasets


@dataclass
class DataStats:
    """Counts from one preparation run. ``tokens`` and ``loss_tokens`` are over the rows
    used (after skipping and truncation); lengths are in tokens."""

    rows_in: int = 0
    rows_used: int = 0
    skipped_invalid: int = 0
    skipped_overlong: int = 0
    truncated: int = 0
    tokens: int = 0
    loss_tokens: int = 0
    max_length: int = 0
    mean_length: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for logs, the dry-run plan and the termination message)."""
        return asdict(self)


@dataclass
class PreparedDataset:
    """The training rows, ready for the collator.

    ``dataset`` has the columns ``input_ids`` (list[int]), ``completion_mask`` (list[int],
    1 where the token carries loss) and ``length`` (int)."""

    dataset: datasets.Dataset
    stats: DataStats = field(default_factory=DataStats)
