"""The memory plan: the same effective batch as the largest micro-batch that fits, then
gradient checkpointing off when that micro-batch fits without it."""

from __future__ import annotations

import pytest

from finetune_api.config import TrainerConfig
from finetune_trainer.errors import InvalidConfig
from finetune_trainer.fixtures.presets import GPT_OSS_20B
from finetune_trainer.memory_plan import (
    candidates,
    estimate_fits,
    memory_fraction,
    plan_memory,
)

GIB = 2**30


def config(model: dict | None = None, **training_settings) -> TrainerConfig:
    return TrainerConfig.from_mapping({"model": model or {}, "training": training_settings})


def recording(fits) -> tuple[list[tuple[int, str, bool]], object]:
    tried: list[tuple[int, str, bool]] = []

    def probe(size: int, checkpointing: str, offload: bool) -> bool:
        tried.append((size, checkpointing, offload))
        return fits(size, checkpointing, offload)

    return tried, probe


@pytest.mark.parametrize(
    "per_device, accumulation, expected",
    [(1, 4, [4, 2, 1]), (2, 4, [8, 4, 2]), (1, 6, [6, 3, 2, 1]), (3, 1, [3])],
)
def test_candidates_keep_the_effective_batch(per_device, accumulation, expected) -> None:
    assert candidates(per_device, accumulation) == expected


def test_seed_settings_with_room_become_one_fast_micro_batch_of_four() -> None:
    tried, probe = recording(lambda size, checkpointing, offload: True)
    plan = plan_memory(config(), probe)
    assert (plan.per_device, plan.accumulation, plan.effective) == (4, 1, 4)
    assert (plan.gradient_checkpointing, plan.offload_embedding) == ("off", False)
    # Sized with the smallest footprint, then the embedding back, then no recomputation.
    assert tried == [(4, "unsloth", True), (4, "unsloth", False), (4, "off", False)]
    assert "gradient checkpointing off" in plan.reason and "embedding on the GPU" in plan.reason


def test_what_the_user_chose_is_kept() -> None:
    for chosen in ("unsloth", "on", "off"):
        for offload in (True, False):
            tried, probe = recording(lambda size, checkpointing, offload: True)
            plan = plan_memory(
                config({"offloadEmbedding": offload}, gradientCheckpointing=chosen), probe
            )
            assert (plan.per_device, plan.gradient_checkpointing) == (4, chosen)
            assert plan.offload_embedding is offload
            assert tried == [(4, chosen, offload)]  # sized with the user's choices


def test_falls_back_to_the_largest_that_fits_and_keeps_what_it_needs() -> None:
    tried, probe = recording(
        lambda size, checkpointing, offload: checkpointing != "off" and offload and size <= 2
    )
    plan = plan_memory(config(perDeviceTrainBatchSize=1, gradientAccumulationSteps=8), probe)
    assert (plan.per_device, plan.accumulation) == (2, 4)
    assert (plan.gradient_checkpointing, plan.offload_embedding) == ("unsloth", True)
    assert tried == [
        (8, "unsloth", True),
        (4, "unsloth", True),
        (2, "unsloth", True),
        (2, "unsloth", False),
        (2, "off", True),
    ]
    assert "needs it" in plan.reason and "has no room" in plan.reason


def test_a_larger_micro_batch_wins_over_speed_settings() -> None:
    # 4 rows fit only with checkpointing and the embedding in host memory; 2 rows would fit
    # without either: 4 rows it is. Then the embedding comes back before checkpointing goes.
    fitting = {(4, "unsloth", True), (2, "off", False), (2, "unsloth", False)}
    plan = plan_memory(config(), lambda size, c, offload: (size, c, offload) in fitting)
    assert (plan.per_device, plan.gradient_checkpointing, plan.offload_embedding) == (
        4,
        "unsloth",
        True,
    )
    fitting |= {(4, "unsloth", False)}
    plan = plan_memory(config(), lambda size, c, offload: (size, c, offload) in fitting)
    assert (plan.gradient_checkpointing, plan.offload_embedding) == ("unsloth", False)


def test_a_backend_that_cannot_offload_the_embedding_is_planned_with_it_on_the_gpu() -> None:
    # transformers + PEFT on CUDA: model.offloadEmbedding cannot take effect, so no
    # micro-batch may count on the memory it would save.
    for model in ({}, {"offloadEmbedding": True}):
        tried, probe = recording(lambda size, checkpointing, offload: not offload and size <= 2)
        plan = plan_memory(config(model), probe, can_offload_embedding=False)
        assert (plan.per_device, plan.offload_embedding) == (2, False)
        assert all(offload is False for _, _, offload in tried)


def test_nothing_fits_keeps_the_configured_split_and_the_smallest_footprint_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tried, probe = recording(lambda size, checkpointing, offload: False)
    plan = plan_memory(config(), probe)
    assert (plan.per_device, plan.accumulation) == (1, 4)
    assert (plan.gradient_checkpointing, plan.offload_embedding) == ("unsloth", True)
    assert tried[-1] == (1, "unsloth", True)  # the settings chosen, weighed once more
    assert "over the budget" in plan.reason
    assert "the memory estimate exceeds the budget" in caplog.text


def test_settings_known_to_fit_are_not_weighed_again() -> None:
    tried, probe = recording(
        lambda size, checkpointing, offload: (size, checkpointing, offload) == (1, "unsloth", True)
    )
    plan = plan_memory(config(), probe)
    assert (plan.per_device, plan.gradient_checkpointing, plan.offload_embedding) == (
        1,
        "unsloth",
        True,
    )
    assert "over the budget" not in plan.reason
    # (1, unsloth, host) was never confirmed by a step above, so it is weighed at the end.
    assert tried[-1] == (1, "unsloth", True)
    tried, probe = recording(lambda size, checkpointing, offload: True)
    plan_memory(config(), probe)
    assert len(tried) == 3  # 4 rows fit, then the embedding, then no checkpointing


@pytest.mark.parametrize(
    "settings, probe, reason, checkpointing",
    [
        ({"autoMicroBatch": False}, lambda s, c, o: True, "autoMicroBatch is off", "off"),
        ({"gradientAccumulationSteps": 1}, lambda s, c, o: True, "no accumulation", "off"),
        ({}, None, "no GPU", "unsloth"),
    ],
)
def test_configured_split_is_kept(settings, probe, reason, checkpointing) -> None:
    chosen = config(**settings)
    plan = plan_memory(chosen, probe)
    assert (plan.per_device, plan.accumulation) == (
        chosen.training.per_device_train_batch_size,
        chosen.training.gradient_accumulation_steps,
    )
    assert reason in plan.reason
    # autoMicroBatch covers the split only; the other choices still weigh the GPU.
    assert plan.gradient_checkpointing == checkpointing
    assert plan.offload_embedding is (probe is None)


@pytest.mark.parametrize(
    "gpu_gib, expected",
    [
        # An H200: 4 rows without checkpointing, the embedding on the GPU (about 55 GiB).
        (139.8, (4, 1, "off", False)),
        # A 24 GB card: 4 rows (about 18 GiB) only with checkpointing.
        (23.6, (4, 1, "unsloth", False)),
        # A card with a 15.9 GiB budget: 1 x 4 (15.7 GiB) fits only with everything that
        # saves memory.
        (18.7, (1, 4, "unsloth", True)),
        # A 16 GB card: the same, although the cautious estimate puts it over the budget.
        (14.6, (1, 4, "unsloth", True)),
    ],
)
def test_gpt_oss_20b_plans_by_the_gpu_it_meets(gpu_gib, expected) -> None:
    seed = TrainerConfig()  # the seed's settings: batch 1 x 4, seq 1024, 4-bit, r=8
    fits = estimate_fits(seed, {**GPT_OSS_20B, "model_type": "gpt_oss"}, gpu_gib * GIB * 0.85)
    plan = plan_memory(seed, fits)
    assert (
        plan.per_device,
        plan.accumulation,
        plan.gradient_checkpointing,
        plan.offload_embedding,
    ) == expected
    assert ("over the budget" in plan.reason) is (gpu_gib < 16)


def test_what_the_plan_decides_leaves_the_fingerprint_alone() -> None:
    # A run resumed on another GPU may plan differently and must still resume its own
    # checkpoints: these settings change speed and memory, not what a checkpoint means.
    seed = config().fingerprint()
    for model, training_settings in [
        ({"offloadEmbedding": True}, {}),
        ({"offloadEmbedding": False}, {"gradientCheckpointing": "off"}),
        ({}, {"gradientCheckpointing": "unsloth", "autoMicroBatch": False}),
    ]:
        assert config(model, **training_settings).fingerprint() == seed
    assert config({"maxSeqLength": 2048}).fingerprint() != seed


def test_memory_fraction_from_the_environment(monkeypatch) -> None:
    assert memory_fraction() == 0.85
    monkeypatch.setenv("FTO_GPU_MEMORY_FRACTION", "0.5")
    assert memory_fraction() == 0.5
    for bad in ("2", "lots", "nan"):
        monkeypatch.setenv("FTO_GPU_MEMORY_FRACTION", bad)
        with pytest.raises(InvalidConfig, match="FTO_GPU_MEMORY_FRACTION must be a number"):
            memory_fraction()


class GpuBackend:
    """A backend with a GPU budget, for the planning step alone (no GPU here)."""

    description = "a GPU that is not there"
    offloads_embedding = True

    def memory_budget(self, fraction: float) -> float:
        return 80 * GIB * fraction


@pytest.mark.parametrize(
    "config_json",
    [{"model_type": "gpt_oss"}, None],  # sizes missing; no config.json at all
)
def test_a_model_config_without_sizes_leaves_the_settings_as_configured(
    tmp_path, caplog: pytest.LogCaptureFixture, config_json
) -> None:
    import json

    from finetune_trainer.runtime import RuntimeOptions
    from finetune_trainer.sources import ModelSource
    from finetune_trainer.train import TrainingRun

    if config_json is not None:
        (tmp_path / "config.json").write_text(json.dumps(config_json))
    run = TrainingRun(config(), RuntimeOptions(scratch_dir=tmp_path / "scratch"))
    source = ModelSource(str(tmp_path), None, True, "a model without sizes")
    plan = run._plan_memory(GpuBackend(), source, None)
    assert (plan.per_device, plan.accumulation) == (1, 4)
    assert (plan.gradient_checkpointing, plan.offload_embedding) == ("unsloth", True)
    assert "no memory estimate for this model's config.json" in plan.reason
    if config_json is not None:
        assert "no memory estimate from this model's config.json" in caplog.text
