"""Padding waste of random, length-grouped and packed batching, on lengths with known
answers."""

from __future__ import annotations

import pytest

from finetune_trainer.data.batching import (
    length_grouped_order,
    pack_best_fit,
    packed_fraction,
    padded_tokens,
    padding_fraction,
    padding_report,
    random_order,
)


def test_padded_tokens_pads_each_batch_to_its_longest_row() -> None:
    # Batches (1, 2) and (3, 4): 2*2 + 4*2 = 12 tokens for 10 real ones.
    assert padded_tokens([1, 2, 3, 4], [0, 1, 2, 3], micro_batch=2) == 12
    # A short last batch is padded only to its own longest row.
    assert padded_tokens([5, 1, 3], [0, 1, 2], micro_batch=2) == 10 + 3


def test_micro_batch_of_one_never_pads() -> None:
    lengths = [7, 300, 12, 90]
    assert padding_fraction(lengths, 1, group_by_length=False, seed=0) == 0.0
    assert padding_fraction(lengths, 1, group_by_length=True, seed=0) == 0.0


def test_equal_lengths_never_pad() -> None:
    assert padding_fraction([64] * 10, 4, group_by_length=False, seed=3) == 0.0


def test_one_megabatch_sorts_everything_longest_first() -> None:
    lengths = [1, 4, 2, 3]
    order = length_grouped_order(lengths, micro_batch=2, seed=0, mega_batch_mult=2)
    assert [lengths[i] for i in order] == [4, 3, 2, 1]
    # (4, 3) and (2, 1): 8 + 4 = 12 padded tokens for 10 real ones.
    assert padded_tokens(lengths, order, 2) == 12


def test_grouped_order_is_a_permutation_with_the_longest_row_first() -> None:
    lengths = [(i * 37) % 101 + 1 for i in range(200)]
    order = length_grouped_order(lengths, micro_batch=4, seed=7)
    assert sorted(order) == list(range(200))
    assert lengths[order[0]] == max(lengths)


def test_random_order_is_seeded() -> None:
    assert random_order(50, seed=1) == random_order(50, seed=1)
    assert random_order(50, seed=1) != random_order(50, seed=2)
    assert sorted(random_order(50, seed=1)) == list(range(50))


def test_grouping_by_length_cuts_padding_on_mixed_lengths() -> None:
    lengths = [20, 900] * 50 + [300] * 20
    shuffled = padding_fraction(lengths, 4, group_by_length=False, seed=0)
    grouped = padding_fraction(lengths, 4, group_by_length=True, seed=0)
    assert shuffled > 0.3
    assert grouped < shuffled / 3


def test_known_padding_fraction() -> None:
    # Four rows, one batch: padded to 4 x 4 = 16 tokens holding 10.
    assert padding_fraction([1, 2, 3, 4], 4, group_by_length=False, seed=0) == pytest.approx(
        1 - 10 / 16
    )


def test_best_fit_decreasing_packing() -> None:
    lengths = [5, 5, 3, 3, 2, 2]
    bins = pack_best_fit(lengths, max_seq_length=8)
    assert sorted(sorted(lengths[i] for i in b) for b in bins) == [[2, 2], [3, 5], [3, 5]]
    # 20 tokens in 3 sequences of 8.
    assert packed_fraction(lengths, 8) == pytest.approx(1 - 20 / 24)


def test_packing_counts_overlong_rows_as_truncated() -> None:
    assert pack_best_fit([10], 8) == [[0]]
    assert packed_fraction([10], 8) == 0.0


def test_empty_and_bad_inputs() -> None:
    assert padding_fraction([], 4, group_by_length=True, seed=0) == 0.0
    assert packed_fraction([], 8) == 0.0
    with pytest.raises(ValueError, match="micro_batch"):
        padding_fraction([1], 0, group_by_length=False, seed=0)
    with pytest.raises(ValueError, match="max_seq_length"):
        pack_best_fit([1], 0)


def test_padding_report_has_every_strategy() -> None:
    report = padding_report([10, 20, 30, 40], micro_batch=2, max_seq_length=64, seed=0)
    assert report["rows"] == 4
    assert report["packed_sequences"] == 2  # 40+20 and 30+10
    assert report["packed"] == pytest.approx(1 - 100 / 128)
    assert 0.0 <= report["length_grouped"] < 1.0
    assert 0.0 <= report["random_order"] < 1.0
    assert set(report) == {
        "rows",
        "micro_batch",
        "random_order",
        "length_grouped",
        "packed",
        "packed_sequences",
    }


def test_grouping_batch_sizes_the_megabatches() -> None:
    # 16 rows: with a grouping batch of 16 there is one mega-batch, so the whole order is
    # sorted longest first and micro-batches of 4 hold neighbours in length.
    lengths = [(i * 7) % 16 + 1 for i in range(16)]
    order = length_grouped_order(lengths, micro_batch=16, seed=0, mega_batch_mult=1)
    assert [lengths[i] for i in order] == sorted(lengths, reverse=True)
    grouped = padding_fraction(lengths, 4, group_by_length=True, seed=0, grouping_batch=16)
    assert grouped == pytest.approx(1 - sum(lengths) / padded_tokens(lengths, order, 4))
