"""How much of a batch is padding, for a given order of rows, and how well rows pack.

Pure Python on row lengths, so the waste of a batching strategy can be measured on a
dataset (or a list of lengths) without a model. Batches are padded to their longest row,
as the SFT collator does.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence


def random_order(count: int, seed: int) -> list[int]:
    """A shuffled order of row indices, as a random sampler would produce."""
    order = list(range(count))
    random.Random(seed).shuffle(order)
    return order


def length_grouped_order(
    lengths: Sequence[int], micro_batch: int, seed: int, mega_batch_mult: int | None = None
) -> list[int]:
    """Row order with similar lengths side by side, the strategy of transformers'
    LengthGroupedSampler: shuffle, cut into mega-batches of ``mega_batch_mult`` micro-batches,
    sort each mega-batch longest first, and move the longest row of all to the very front so
    an out-of-memory error shows on the first step rather than hours in."""
    if mega_batch_mult is None:
        mega_batch_mult = max(1, min(len(lengths) // (micro_batch * 4), 50))
    shuffled = random_order(len(lengths), seed)
    size = mega_batch_mult * micro_batch
    megabatches = [
        sorted(shuffled[i : i + size], key=lambda row: lengths[row], reverse=True)
        for i in range(0, len(shuffled), size)
    ]
    if megabatches:
        longest = max(range(len(megabatches)), key=lambda m: lengths[megabatches[m][0]])
        first, top = megabatches[0], megabatches[longest]
        first[0], top[0] = top[0], first[0]
    return [row for megabatch in megabatches for row in megabatch]


def padded_tokens(lengths: Sequence[int], order: Sequence[int], micro_batch: int) -> int:
    """Tokens the batches hold once each is padded to its longest row (last one may be
    short)."""
    total = 0
    for start in range(0, len(order), micro_batch):
        batch = [lengths[row] for row in order[start : start + micro_batch]]
        total += max(batch) * len(batch)
    return total


def padding_fraction(
    lengths: Sequence[int],
    micro_batch: int,
    *,
    group_by_length: bool,
    seed: int,
    grouping_batch: int | None = None,
) -> float:
    """Share of the batched tokens that are padding, for rows in random order or grouped by
    length, in micro-batches of ``micro_batch`` rows padded to their longest row.
    ``grouping_batch`` is the batch size the length-grouped sampler sizes its mega-batches
    by (transformers 5 passes micro-batch x gradient accumulation); default ``micro_batch``."""
    if micro_batch < 1:
        raise ValueError("micro_batch must be at least 1")
    if not lengths:
        return 0.0
    order = (
        length_grouped_order(lengths, grouping_batch or micro_batch, seed)
        if group_by_length
        else random_order(len(lengths), seed)
    )
    padded = padded_tokens(lengths, order, micro_batch)
    return 1.0 - sum(lengths) / padded


def pack_best_fit(lengths: Sequence[int], max_seq_length: int) -> list[list[int]]:
    """Row indices packed into sequences of at most ``max_seq_length`` tokens, best fit
    decreasing (longest rows first, each into the fullest sequence it still fits).
    Rows longer than ``max_seq_length`` count as truncated to it."""
    if max_seq_length < 1:
        raise ValueError("max_seq_length must be at least 1")
    bins: list[list[int]] = []
    # (room left, bin number), sorted: the best fit is the first entry with enough room.
    rooms: list[tuple[int, int]] = []
    for row in sorted(range(len(lengths)), key=lambda r: lengths[r], reverse=True):
        size = min(lengths[row], max_seq_length)
        slot = bisect.bisect_left(rooms, (size, -1))
        if slot < len(rooms):
            room, number = rooms.pop(slot)
            bins[number].append(row)
        else:
            room, number = max_seq_length, len(bins)
            bins.append([row])
        bisect.insort(rooms, (room - size, number))
    return bins


def packed_fraction(lengths: Sequence[int], max_seq_length: int) -> float:
    """Share of padding when rows are packed best fit decreasing into sequences that are
    each padded to ``max_seq_length`` (a fixed-shape batch); 0 means no waste."""
    if not lengths:
        return 0.0
    bins = pack_best_fit(lengths, max_seq_length)
    used = sum(min(length, max_seq_length) for length in lengths)
    return 1.0 - used / (len(bins) * max_seq_length)


def padding_report(
    lengths: Sequence[int],
    micro_batch: int,
    max_seq_length: int,
    seed: int,
    grouping_batch: int | None = None,
) -> dict[str, float | int]:
    """Padding waste of each strategy for one dataset, for logs and the benchmark."""
    return {
        "rows": len(lengths),
        "micro_batch": micro_batch,
        "random_order": padding_fraction(lengths, micro_batch, group_by_length=False, seed=seed),
        "length_grouped": padding_fraction(
            lengths, micro_batch, group_by_length=True, seed=seed, grouping_batch=grouping_batch
        ),
        "packed": packed_fraction(lengths, max_seq_length),
        "packed_sequences": len(pack_best_fit(lengths, max_seq_length)),
    }
