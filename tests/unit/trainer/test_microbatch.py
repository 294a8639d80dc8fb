"""Micro-batch sizing: same effective batch, the largest micro-batch that fits."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from finetune_trainer.config import TrainingSpec
from finetune_trainer.errors import InvalidConfig
from finetune_trainer.microbatch import (
    candidates,
    compute_device,
    memory_fraction,
    plan_micro_batch,
)


def training(**kwargs) -> TrainingSpec:
    return TrainingSpec.model_validate(kwargs)


@pytest.mark.parametrize(
    "per_device, accumulation, expected",
    [(1, 4, [4, 2, 1]), (2, 4, [8, 4, 2]), (1, 6, [6, 3, 2, 1]), (3, 1, [3])],
)
def test_candidates_keep_the_effective_batch(per_device, accumulation, expected) -> None:
    assert candidates(per_device, accumulation) == expected


def test_seed_settings_become_one_micro_batch_of_four() -> None:
    tried: list[int] = []
    plan = plan_micro_batch(training(), lambda size: tried.append(size) or True)
    assert (plan.per_device, plan.accumulation, plan.effective) == (4, 1, 4)
    assert tried == [4]


def test_falls_back_to_the_largest_that_fits() -> None:
    spec = training(perDeviceTrainBatchSize=1, gradientAccumulationSteps=8)
    tried: list[int] = []
    plan = plan_micro_batch(spec, lambda size: tried.append(size) or size <= 2)
    assert (plan.per_device, plan.accumulation) == (2, 4)
    assert tried == [8, 4, 2]


def test_nothing_fits_keeps_the_configured_split() -> None:
    plan = plan_micro_batch(training(), lambda size: False)
    assert (plan.per_device, plan.accumulation) == (1, 4)


@pytest.mark.parametrize(
    "spec, probe, reason",
    [
        (training(autoMicroBatch=False), lambda s: True, "autoMicroBatch is off"),
        (training(gradientAccumulationSteps=1), lambda s: True, "no accumulation"),
        (training(), None, "no GPU"),
    ],
)
def test_configured_split_is_kept(spec, probe, reason) -> None:
    plan = plan_micro_batch(spec, probe)
    assert (plan.per_device, plan.accumulation) == (
        spec.per_device_train_batch_size,
        spec.gradient_accumulation_steps,
    )
    assert reason in plan.reason


def test_memory_fraction_from_the_environment(monkeypatch) -> None:
    assert memory_fraction() == 0.85
    monkeypatch.setenv("FTO_GPU_MEMORY_FRACTION", "0.5")
    assert memory_fraction() == 0.5
    for bad in ("2", "lots", "nan"):
        monkeypatch.setenv("FTO_GPU_MEMORY_FRACTION", bad)
        with pytest.raises(InvalidConfig, match="FTO_GPU_MEMORY_FRACTION must be a number"):
            memory_fraction()


def test_the_compute_device_skips_an_embedding_kept_in_host_memory() -> None:
    # Stand-ins for parameters (no GPU here): compute_device reads only .device.
    def parameter(kind: str, index: int = 0) -> SimpleNamespace:
        return SimpleNamespace(device=SimpleNamespace(type=kind, index=index))

    embedding_first = [parameter("cpu"), parameter("cuda", 0), parameter("cuda", 0)]
    model = SimpleNamespace(parameters=lambda: iter(embedding_first))
    assert compute_device(model) is embedding_first[1].device
    on_cpu = SimpleNamespace(parameters=lambda: iter([parameter("cpu")]))
    with pytest.raises(RuntimeError, match="no parameter on a CUDA device"):
        compute_device(on_cpu)
