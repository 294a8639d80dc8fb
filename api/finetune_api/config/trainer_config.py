"""The trainer's whole configuration: the training part of a FineTuneJob's spec."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..contract import TRAINER_CONFIG_API_VERSION, TRAINER_CONFIG_KIND, TRAINER_CONFIG_MARKER
from .base import SpecModel
from .dataset import DatasetSpec
from .eval_data import check_evaluation
from .legacy import upgrade_legacy_keys
from .lora import LoraSpec
from .model import ModelSpec
from .output import OutputSpec
from .tracking import TRACKING_KEYS
from .training import TrainingSpec


class TrainerConfig(SpecModel):
    """What to fine-tune, on what, how, and where the results go. Every section is optional;
    an empty config reproduces the original example (gpt-oss-20b on Multilingual-Thinking)."""

    model: ModelSpec = Field(default_factory=ModelSpec, description="The base model.")
    dataset: DatasetSpec = Field(default_factory=DatasetSpec, description="The training data.")
    lora: LoraSpec = Field(default_factory=LoraSpec, description="The LoRA adapter.")
    training: TrainingSpec = Field(
        default_factory=TrainingSpec, description="Optimization settings."
    )
    output: OutputSpec = Field(
        default_factory=OutputSpec, description="Where checkpoints and the adapter go."
    )

    @model_validator(mode="after")
    def _evaluation(self) -> TrainerConfig:
        check_evaluation(self)
        return self

    @classmethod
    def from_mapping(cls, data: Any) -> TrainerConfig:
        """Validate a parsed config. A file marked as canonical (``apiVersion`` and
        ``kind``, as the operator writes it) is read as it is: camelCase keys only, no
        legacy renames. An unmarked one (the original example's ``config.yaml``, a file
        written by hand) may use snake_case and the example's old key names."""
        if isinstance(data, dict) and _MARKER_KEYS & data.keys():
            _Marker.model_validate({key: data.get(key) for key in _MARKER_KEYS})
            body = {k: v for k, v in data.items() if k not in _MARKER_KEYS}
            return cls.model_validate(body, by_alias=True, by_name=False)
        return cls.model_validate(upgrade_legacy_keys(data))

    def to_marked_wire(self) -> dict[str, Any]:
        """The canonical config file's content: the marker, then :meth:`to_wire`."""
        return {**TRAINER_CONFIG_MARKER, **self.to_wire()}

    @classmethod
    def from_file(cls, path: str | Path) -> TrainerConfig:
        text = Path(path).read_text(encoding="utf-8")
        data = yaml.safe_load(text)
        return cls.from_mapping({} if data is None else data)

    def fingerprint(self) -> str:
        """A hash of everything that changes what a checkpoint means. Resuming is refused when
        the checkpoint was written under a different fingerprint. Where outputs go, how the
        inputs are reached (token, S3 endpoint, region, credentials: the same model or data
        may move behind another endpoint), and settings that only change speed, memory or
        bookkeeping are left out."""
        return _hash(self._fingerprinted_wire())

    def legacy_fingerprint(self) -> str:
        """The fingerprint trainers before the memory plan gave this config: they counted
        gradientCheckpointing and offloadEmbedding, whose defaults were then unsloth and
        true. Checkpoints they wrote still resume under this config."""
        wire = self._fingerprinted_wire()
        checkpointing = self.training.gradient_checkpointing
        wire.setdefault("training", {})["gradientCheckpointing"] = (
            "unsloth" if checkpointing == "auto" else checkpointing
        )
        offload = self.model.offload_embedding
        wire.setdefault("model", {})["offloadEmbedding"] = True if offload is None else offload
        return _hash(wire)

    def _fingerprinted_wire(self) -> dict[str, Any]:
        wire = self.to_wire()
        wire.pop("output", None)
        training = wire.get("training", {})
        for key in (
            "autoMicroBatch",
            "gradientCheckpointing",
            "saveSteps",
            "saveTotalLimit",
            "loggingSteps",
            *TRACKING_KEYS,
        ):
            training.pop(key, None)
        # When a run counts as diverged changes no checkpoint: a run stopped as Diverged
        # resumes from its checkpoint with other limits.
        training.pop("divergence", None)
        for key in ("tokenSecretRef", "offloadEmbedding"):
            wire.get("model", {}).pop(key, None)
        # Its default, error, trains on the same tokens as trainers from before the
        # setting (or refuses the row): counted only when it changes them.
        dataset = wire.get("dataset", {})
        if dataset.get("specialTokensInContent") == "error":
            del dataset["specialTokensInContent"]
        for part in ("model", "dataset"):
            for key in ("endpoint", "region", "credentialsSecretRef"):
                wire.get(part, {}).get("s3", {}).pop(key, None)
        return wire


_MARKER_KEYS = frozenset(TRAINER_CONFIG_MARKER)


class _Marker(BaseModel):
    """The marker of a canonical config file; anything else in those keys is refused
    rather than guessed at."""

    model_config = ConfigDict(populate_by_name=False)

    api_version: Any = Field(alias="apiVersion")
    kind: Any

    @field_validator("api_version")
    @classmethod
    def _known_api_version(cls, value: Any) -> Any:
        if value != TRAINER_CONFIG_API_VERSION:
            raise ValueError(
                f"{value!r} is not a config version this trainer reads; fix: use "
                f"{TRAINER_CONFIG_API_VERSION!r}, or a trainer image of the operator's version"
            )
        return value

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: Any) -> Any:
        if value != TRAINER_CONFIG_KIND:
            raise ValueError(f"{value!r} is not a trainer config; fix: use {TRAINER_CONFIG_KIND!r}")
        return value


def _hash(wire: dict[str, Any]) -> str:
    canonical = json.dumps(wire, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
