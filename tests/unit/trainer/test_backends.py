"""Backend selection and the CPU backend's substitutions (the Unsloth backend needs a CUDA
GPU and the gpu extra; it runs in the GPU smoke test)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from finetune_api.config import TrainerConfig
from finetune_trainer.backends import select_backend
from finetune_trainer.backends.transformers_backend import (
    TransformersBackend,
    expert_parameter_paths,
)
from finetune_trainer.errors import InvalidConfig


def test_auto_falls_back_to_transformers_on_cpu_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU; the fallback is for machines without one")
    backend = select_backend("auto")
    assert isinstance(backend, TransformersBackend)
    assert backend.description == "transformers + PEFT on CPU"
    assert "no CUDA GPU is visible" in caplog.text


def test_unsloth_without_a_gpu_is_a_clear_error() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(InvalidConfig, match="--backend unsloth needs a CUDA GPU"):
        select_backend("unsloth")


def test_unsloth_without_the_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("finetune_trainer.backends.unsloth_installed", lambda: False)
    with pytest.raises(InvalidConfig, match="--backend unsloth needs the unsloth package"):
        select_backend("unsloth")


def test_cpu_substitutions(caplog: pytest.LogCaptureFixture) -> None:
    backend = TransformersBackend(cuda=False)
    config = TrainerConfig()
    assert backend.optimizer("adamw_8bit") == "adamw_torch"
    assert backend.optimizer("paged_adamw_8bit") == "adamw_torch"
    assert backend.optimizer("adamw_torch_fused") == "adamw_torch"
    assert backend.optimizer("adafactor") == "adafactor"
    assert "needs bitsandbytes on a CUDA GPU" in caplog.text
    precision = backend.precision(config)
    assert (precision.bf16, precision.fp16, precision.label) == (False, False, "fp32")
    assert backend.trainer_gradient_checkpointing("unsloth") is True  # -> standard
    assert backend.trainer_gradient_checkpointing("on") is True
    assert backend.trainer_gradient_checkpointing("off") is False
    assert backend.memory_budget(0.85) is None  # no GPU memory to plan on the CPU
    assert backend.use_cpu


def test_gpt_oss_experts_are_fused_parameters(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    assert expert_parameter_paths(model) == ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]


def test_the_unsloth_backend_module_is_importable_only_with_unsloth() -> None:
    if importlib.util.find_spec("unsloth") is not None:
        pytest.skip("unsloth is installed here")
    with pytest.raises(ModuleNotFoundError, match="unsloth"):
        import finetune_trainer.backends.unsloth_backend  # noqa: F401
