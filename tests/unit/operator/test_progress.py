"""status.progress: written only on change, with an ETA from the observed step rate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from finetune_api.contract import TrainerProgress
from finetune_operator import progress


def progress_status(*args) -> dict | None:
    """status.progress as written (the merge patch's form), or None."""
    out = progress.progress_status(*args)
    return out.to_wire() if out is not None else None


T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_first_reading() -> None:
    out = progress_status(TrainerProgress(step=2, total_steps=20, loss=2.5), None, T0)
    assert out is not None
    assert out["summary"] == "2/20"
    assert out["loss"] == 2.5
    assert out["lossDisplay"] == "2.5"
    assert out["updatedAt"] == "2026-01-01T00:00:00Z"
    assert "etaSeconds" not in out


def test_unchanged_reading_writes_nothing() -> None:
    first = progress_status(TrainerProgress(step=2, total_steps=20, loss=2.5), None, T0)
    later = T0 + timedelta(seconds=30)
    assert progress_status(TrainerProgress(step=2, total_steps=20, loss=2.5), first, later) is None


def test_eta_from_the_step_rate() -> None:
    first = progress_status(TrainerProgress(step=2, total_steps=20), None, T0)
    out = progress_status(
        TrainerProgress(step=4, total_steps=20), first, T0 + timedelta(seconds=10)
    )
    assert out is not None
    assert out["etaSeconds"] == 80  # 5 s per step, 16 steps left
    assert out["eta"] == "1m20s"  # for the printer column


def test_done() -> None:
    out = progress_status(TrainerProgress(step=20, total_steps=20), None, T0)
    assert out is not None and out["etaSeconds"] == 0


def test_nothing_before_the_first_step() -> None:
    assert progress_status(TrainerProgress(), None, T0) is None


def test_an_exit_summary_without_live_figures_is_no_change() -> None:
    # The trainer's exit summary has step, total and loss only; the epoch, learning rate
    # and speed of the last live reading stay (the status is merge-patched), so the same
    # step again is no change, however often the stopped run is reconciled.
    live = TrainerProgress(
        step=12, total_steps=20, loss=1.7, epoch=0.05, learning_rate=1.6e-4, tokens_per_second=7800
    )
    written = progress_status(live, None, T0)
    summary = TrainerProgress(step=12, total_steps=20, loss=1.7)
    assert progress_status(summary, written, T0 + timedelta(seconds=30)) is None
    moved = progress_status(TrainerProgress(step=13, total_steps=20, loss=1.6), written, T0)
    assert moved is not None and moved["step"] == 13 and "tokensPerSecond" not in moved


def test_the_rounded_loss_goes_with_the_loss() -> None:
    """lossDisplay (the printer column's) is written with every loss, and only then."""
    out = progress_status(
        TrainerProgress(step=2, total_steps=20, loss=10.494906425476074), None, T0
    )
    assert out is not None
    assert (out["loss"], out["lossDisplay"]) == (10.494906425476074, "10.49")
    moved = progress_status(TrainerProgress(step=3, total_steps=20, loss=1.7340021), out, T0)
    assert moved is not None and moved["lossDisplay"] == "1.734"
    # No loss in the reading: neither field is written, the stored ones stay.
    quiet = progress_status(TrainerProgress(step=4, total_steps=20), moved, T0)
    assert quiet is not None and "loss" not in quiet and "lossDisplay" not in quiet
    # Derived, so not a change of its own.
    assert (
        progress_status(TrainerProgress(step=3, total_steps=20, loss=1.7340021), moved, T0) is None
    )


def test_the_eval_loss_is_copied_with_its_display_and_counts_as_a_change() -> None:
    first = progress_status(TrainerProgress(step=10, total_steps=20, loss=2.5), None, T0)
    assert first is not None and "evalLoss" not in first
    later = T0 + timedelta(seconds=5)
    out = progress_status(
        TrainerProgress(step=10, total_steps=20, loss=2.5, eval_loss=2.71828), first, later
    )
    assert out is not None
    assert (out["evalLoss"], out["evalLossDisplay"]) == (2.71828, "2.718")
    stored = {**first, **out}
    same = TrainerProgress(step=10, total_steps=20, loss=2.5, eval_loss=2.71828)
    assert progress_status(same, stored, later) is None
    board = progress.ProgressBoard()
    assert board.record(("ns", "a"), "pod", TrainerProgress(step=10, loss=2.5))
    assert board.record(("ns", "a"), "pod", TrainerProgress(step=10, loss=2.5, eval_loss=2.7))
