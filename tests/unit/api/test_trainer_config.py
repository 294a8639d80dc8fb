"""The shared schema: defaults, valid and invalid inputs, the original example's keys."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from finetune_api.config import TrainerConfig, describe_errors


def errors_of(data: dict) -> list[str]:
    with pytest.raises(ValidationError) as info:
        TrainerConfig.from_mapping(data)
    return describe_errors(info.value, prefix="spec")


class TestDefaults:
    """An empty config is the original single-machine example."""

    def test_defaults_reproduce_the_original_example(self) -> None:
        config = TrainerConfig.from_mapping({})
        assert config.model.name == "unsloth/gpt-oss-20b"
        assert config.model.max_seq_length == 1024
        assert config.model.load_in_4bit is True
        assert config.dataset.name == "HuggingFaceH4/Multilingual-Thinking"
        assert config.dataset.format == "sharegpt"
        assert config.dataset.split == "train"
        assert (config.lora.rank, config.lora.alpha, config.lora.dropout) == (8, 16, 0.0)
        assert "gate_up_proj" in config.lora.target_modules
        training = config.training
        assert training.max_steps == 20
        assert training.per_device_train_batch_size == 1
        assert training.gradient_accumulation_steps == 4
        assert training.learning_rate == pytest.approx(2e-4)
        assert training.optimizer == "adamw_8bit"
        assert training.save_steps == 10
        assert training.seed == 3407
        assert config.output.path == "outputs"

    def test_wire_form_is_camel_case_and_round_trips(self) -> None:
        config = TrainerConfig.from_mapping({})
        wire = config.to_wire()
        assert wire["model"]["loadIn4bit"] is True
        assert wire["training"]["gradientAccumulationSteps"] == 4
        assert TrainerConfig.from_mapping(wire) == config

    def test_short_runs_shrink_the_default_checkpoint_interval(self) -> None:
        config = TrainerConfig.from_mapping({"training": {"maxSteps": 4}})
        assert config.training.save_steps == 4
        assert config.training.warmup_steps == 3


class TestValid:
    @pytest.mark.parametrize(
        "data, check",
        [
            (
                {"model": {"pvc": {"claimName": "models", "path": "gpt-oss"}}},
                lambda c: c.model.source_kind == "pvc" and c.model.name is None,
            ),
            (
                {"model": {"s3": {"uri": "s3://bucket/models/x"}}},
                lambda c: c.model.s3.bucket == "bucket" and c.model.s3.prefix == "models/x",
            ),
            (
                {"dataset": {"configMap": {"name": "data", "key": "train.jsonl"}}},
                lambda c: c.dataset.source_kind == "config_map",
            ),
            (
                {"dataset": {"path": "/data/x.parquet", "format": "custom"}},
                lambda c: c.dataset.format == "custom",
            ),
            ({"dataset": {"split": "train[:100]"}}, lambda c: c.dataset.split == "train[:100]"),
            (
                {"training": {"numEpochs": 2}},
                lambda c: c.training.max_steps is None and c.training.num_epochs == 2,
            ),
            ({"model": {"maxSeqLength": 131072}}, lambda c: c.model.max_seq_length == 131072),
            (
                {
                    "output": {
                        "s3": {
                            "uri": "s3://bkt/p",
                            "endpoint": "http://127.0.0.1:9000",
                            "credentialsSecretRef": {"name": "creds"},
                        }
                    }
                },
                lambda c: (
                    c.output.s3.credentials_secret_ref.access_key_id_key == "AWS_ACCESS_KEY_ID"
                ),
            ),
        ],
    )
    def test_accepts(self, data: dict, check) -> None:
        assert check(TrainerConfig.from_mapping(data))


class TestInvalid:
    @pytest.mark.parametrize(
        "data, expected",
        [
            (
                {"training": {"maxSteps": 0}},
                "spec.training.maxSteps: 0 is too small; fix: use a value greater than or equal "
                "to 1",
            ),
            ({"training": {"optimizer": "adam"}}, "spec.training.optimizer: 'adam' is not allowed"),
            ({"training": {"bogus": 1}}, "spec.training.bogus: unknown field"),
            ({"model": {"maxSeqLength": 200000}}, "spec.model.maxSeqLength: 200000 is too large"),
            (
                {"model": {"name": "a/b", "pvc": {"claimName": "x"}}},
                "set at most one of model.name, model.path, model.pvc and model.s3",
            ),
            (
                {"model": {"pvc": {"claimName": "m"}, "tokenSecretRef": {"name": "t", "key": "k"}}},
                "model.tokenSecretRef is only used with model.name",
            ),
            (
                {"dataset": {"pvc": {"claimName": "d", "path": "../etc"}}},
                "spec.dataset.pvc.path: must not contain a '..' segment",
            ),
            (
                {"dataset": {"pvc": {"claimName": "Not_A_Name"}}},
                "spec.dataset.pvc.claimName: 'Not_A_Name' is not of the right form",
            ),
            ({"dataset": {"format": "alpaca"}}, "spec.dataset.format: 'alpaca' is not allowed"),
            (
                {"training": {"maxSteps": 20, "saveSteps": 30}},
                "training.saveSteps (30) must not exceed training.maxSteps (20)",
            ),
            (
                {"training": {"maxSteps": 5, "numEpochs": 1}},
                "set only one of training.maxSteps and training.numEpochs",
            ),
            ({"output": {"s3": {"uri": "http://bucket/x"}}}, "spec.output.s3.uri"),
            ({"lora": {"rank": 0}}, "spec.lora.rank: 0 is too small"),
            (
                {"model": {"pvc": {"claimName": "m"}, "revision": "main"}},
                "model.revision is only used with model.name",
            ),
            (
                {"dataset": {"pvc": {"claimName": "d"}, "configName": "en"}},
                "dataset.configName and dataset.revision are only used with dataset.name",
            ),
            (
                {
                    "output": {
                        "s3": {"uri": "s3://bucket/x", "endpoint": "https://key:secret@minio:9000"}
                    }
                },
                "spec.output.s3.endpoint: must not carry credentials (user:password@host); put "
                "them in a Secret named by credentialsSecretRef",
            ),
            (
                {"model": {"s3": {"uri": "s3://bucket/m", "endpoint": "http://user@minio/"}}},
                "spec.model.s3.endpoint: must not carry credentials",
            ),
            (
                {"output": {"s3": {"uri": "s3://bucket/runs/../../etc"}}},
                "spec.output.s3.uri: must not contain a '.' or '..' segment; name the prefix "
                "without them",
            ),
            (
                {"model": {"s3": {"uri": "s3://bucket/models/./m"}}},
                "spec.model.s3.uri: must not contain a '.' or '..' segment",
            ),
            (
                {"dataset": {"s3": {"uri": "s3://bucket/.."}}},
                "spec.dataset.s3.uri: must not contain a '.' or '..' segment",
            ),
        ],
    )
    def test_rejects_with_field_and_fix(self, data: dict, expected: str) -> None:
        assert any(expected in line for line in errors_of(data)), errors_of(data)

    def test_dots_inside_an_s3_key_segment_are_fine(self) -> None:
        uri = "s3://my.bucket/runs/v1.2/..hidden/a..b/"
        config = TrainerConfig.from_mapping({"output": {"s3": {"uri": uri}}})
        assert config.output.s3 is not None and config.output.s3.uri == uri

    def test_an_at_sign_after_the_host_is_no_credential(self) -> None:
        s3 = {"uri": "s3://bucket/x", "endpoint": "https://minio.example:9000/tenant@a"}
        config = TrainerConfig.from_mapping({"output": {"s3": s3}})
        assert config.output.s3 is not None
        assert config.output.s3.endpoint == s3["endpoint"]

    def test_reports_every_problem_at_once(self) -> None:
        lines = errors_of({"training": {"maxSteps": 0, "optimizer": "x"}, "lora": {"rank": -1}})
        assert len(lines) == 3


class TestOriginalExampleConfig:
    """The single-machine example's config.yaml keeps working."""

    def test_snake_case_and_old_names(self, tmp_path) -> None:
        path = tmp_path / "config.yaml"
        path.write_text(
            """
model:
  name: unsloth/gpt-oss-20b
  max_seq_length: 2048
  load_in_4bit: true
dataset:
  path: HuggingFaceH4/Multilingual-Thinking
  format: sharegpt
  split: train
  max_samples: 100
lora:
  r: 16
  lora_alpha: 32
  lora_dropout: 0
  target_modules: [q_proj, v_proj]
training:
  max_steps: 30
  per_device_train_batch_size: 2
  gradient_accumulation_steps: 4
  learning_rate: 1.0e-4
  warmup_steps: 5
  logging_steps: 1
  save_steps: 10
  optim: adamw_8bit
output:
  dir: outputs/run1
"""
        )
        config = TrainerConfig.from_file(path)
        assert config.model.max_seq_length == 2048
        assert config.dataset.name == "HuggingFaceH4/Multilingual-Thinking"
        assert config.dataset.max_samples == 100
        assert (config.lora.rank, config.lora.alpha) == (16, 32)
        assert config.training.max_steps == 30
        assert config.training.optimizer == "adamw_8bit"
        assert config.output.path == "outputs/run1"

    def test_local_dataset_path_stays_a_path(self) -> None:
        config = TrainerConfig.from_mapping({"dataset": {"path": "./data/train.jsonl"}})
        assert config.dataset.path == "./data/train.jsonl"
        assert config.dataset.name is None

    def test_max_steps_minus_one_means_epochs(self) -> None:
        config = TrainerConfig.from_mapping({"training": {"max_steps": -1, "num_epochs": 3}})
        assert config.training.max_steps is None
        assert config.training.num_epochs == 3


class TestFingerprint:
    def test_ignores_output_location_and_bookkeeping(self) -> None:
        base = TrainerConfig.from_mapping({})
        moved = TrainerConfig.from_mapping(
            {"output": {"path": "elsewhere"}, "training": {"saveSteps": 5, "loggingSteps": 2}}
        )
        assert base.fingerprint() == moved.fingerprint()

    def test_changes_with_what_is_trained(self) -> None:
        base = TrainerConfig.from_mapping({})
        other = TrainerConfig.from_mapping({"lora": {"rank": 16}})
        assert base.fingerprint() != other.fingerprint()

    def test_ignores_how_the_inputs_are_reached_but_not_which_they_are(self) -> None:
        def config(endpoint: str, secret: str, model_uri: str) -> TrainerConfig:
            s3 = {
                "endpoint": endpoint,
                "region": endpoint[-7:],
                "credentialsSecretRef": {"name": secret},
            }
            return TrainerConfig.from_mapping(
                {
                    "model": {"s3": {"uri": model_uri, **s3}},
                    "dataset": {"s3": {"uri": "s3://data/train.jsonl", **s3}},
                }
            )

        base = config("https://s3.one.example", "creds-a", "s3://models/gpt-oss")
        moved = config("https://s3.two.example", "creds-b", "s3://models/gpt-oss")
        assert base.fingerprint() == moved.fingerprint()
        other = config("https://s3.one.example", "creds-a", "s3://models/other")
        assert base.fingerprint() != other.fingerprint()
        hub = TrainerConfig.from_mapping({"model": {"name": "org/m"}})
        with_token = TrainerConfig.from_mapping(
            {"model": {"name": "org/m", "tokenSecretRef": {"name": "hf", "key": "token"}}}
        )
        assert hub.fingerprint() == with_token.fingerprint()

    def test_special_tokens_in_content_counts_only_when_it_changes_the_tokens(self) -> None:
        # The default trains on what trainers before the setting did (or refuses the row),
        # so their checkpoints still resume; escape tokenizes such rows differently.
        base = TrainerConfig.from_mapping({})
        assert base.to_wire()["dataset"]["specialTokensInContent"] == "error"
        assert base.fingerprint() == "1a484c44838778d6"  # what trainers before it computed
        explicit = TrainerConfig.from_mapping({"dataset": {"specialTokensInContent": "error"}})
        assert explicit.fingerprint() == base.fingerprint()
        wire = base._fingerprinted_wire()
        assert "specialTokensInContent" not in wire["dataset"]
        escape = TrainerConfig.from_mapping({"dataset": {"specialTokensInContent": "escape"}})
        assert escape.fingerprint() != base.fingerprint()


class TestOutputUri:
    @pytest.mark.parametrize(
        "output, expected",
        [
            ({"pvc": {"claimName": "out", "path": "ml/run"}}, "pvc://out/ml/run/checkpoint-10"),
            ({"pvc": {"claimName": "out"}}, "pvc://out/checkpoint-10"),
            ({"s3": {"uri": "s3://bucket/runs/a/"}}, "s3://bucket/runs/a/checkpoint-10"),
            ({"path": "/data/out"}, "/data/out/checkpoint-10"),
        ],
    )
    def test_uri(self, output: dict, expected: str) -> None:
        config = TrainerConfig.from_mapping({"output": output})
        assert config.output.uri("checkpoint-10") == expected


MARKER = {"apiVersion": "finetune.dev/v1alpha1", "kind": "TrainerConfig"}


class TestMarkedConfig:
    """The operator's config file says it holds canonical keys: one reading of each field."""

    def test_a_relative_dataset_path_stays_a_path(self) -> None:
        # Unmarked, the original example's rule reads it as a Hub dataset id...
        unmarked = TrainerConfig.from_mapping({"dataset": {"path": "team/chats"}})
        assert (unmarked.dataset.name, unmarked.dataset.path) == ("team/chats", None)
        # ...which a marked file never gets: it names a path, and fails as one if missing.
        marked = TrainerConfig.from_mapping({**MARKER, "dataset": {"path": "team/chats"}})
        assert (marked.dataset.name, marked.dataset.path) == (None, "team/chats")

    @pytest.mark.parametrize(
        ("data", "expected"),
        [
            ({"model": {"max_seq_length": 2048}}, "spec.model.max_seq_length: unknown field"),
            ({"lora": {"r": 16}}, "spec.lora.r: unknown field"),
            ({"output": {"dir": "out"}}, "spec.output.dir: unknown field"),
            ({"training": {"max_steps": -1}}, "spec.training.max_steps: unknown field"),
        ],
    )
    def test_legacy_and_snake_case_keys_are_refused(self, data: dict, expected: str) -> None:
        assert any(line.startswith(expected) for line in errors_of({**MARKER, **data}))

    @pytest.mark.parametrize(
        ("marker", "expected"),
        [
            (
                {"apiVersion": "finetune.dev/v2", "kind": "TrainerConfig"},
                "apiVersion: 'finetune.dev/v2' is not a config version this trainer reads",
            ),
            ({"kind": "TrainerConfig"}, "apiVersion: None is not a config version"),
            (
                {"apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob"},
                "kind: 'FineTuneJob' is not a trainer config",
            ),
            ({"apiVersion": "finetune.dev/v1alpha1"}, "kind: None is not a trainer config"),
        ],
    )
    def test_an_unknown_marker_is_refused(self, marker: dict, expected: str) -> None:
        with pytest.raises(ValidationError) as info:
            TrainerConfig.from_mapping({**marker, "training": {"maxSteps": 5}})
        assert any(expected in line for line in describe_errors(info.value)), info.value

    def test_round_trip_and_fingerprint(self) -> None:
        config = TrainerConfig.from_mapping(
            {"model": {"pvc": {"claimName": "m"}}, "training": {"maxSteps": 7}}
        )
        wire = config.to_marked_wire()
        assert {k: wire[k] for k in MARKER} == MARKER
        again = TrainerConfig.from_mapping(wire)
        assert again == config
        assert again.fingerprint() == config.fingerprint()

    def test_the_trainer_config_alone_takes_relative_paths(self) -> None:
        """The original example reads ./my_conversations.json from where it runs."""
        config = TrainerConfig.from_mapping(
            {**MARKER, "dataset": {"path": "./my_conversations.json"}, "model": {"path": "m"}}
        )
        assert config.dataset.path == "./my_conversations.json"
        assert config.model.path == "m"

    @pytest.mark.parametrize(
        "model_name, field, value",
        [
            ("./merged", "path", "./merged"),
            ("/models/gpt-oss", "path", "/models/gpt-oss"),
            ("unsloth/gpt-oss-20b", "name", "unsloth/gpt-oss-20b"),
        ],
    )
    def test_the_examples_model_name_is_a_hub_id_or_a_local_directory(
        self, model_name: str, field: str, value: str
    ) -> None:
        """The original example's loader took either in model_name: a path is model.path,
        not a Hub id refused for its form."""
        config = TrainerConfig.from_mapping({"model": {"model_name": model_name}})
        assert getattr(config.model, field) == value


NUL_FIELDS = [
    ({"model": {"path": "/models/a\x00b"}}, "spec.model.path"),
    ({"dataset": {"path": "/data/a\x00.jsonl"}}, "spec.dataset.path"),
    ({"output": {"path": "/out/\x00"}}, "spec.output.path"),
    ({"dataset": {"pvc": {"claimName": "d", "path": "x\x00y"}}}, "spec.dataset.pvc.path"),
    ({"output": {"pvc": {"claimName": "o", "path": "runs/\x00"}}}, "spec.output.pvc.path"),
    ({"output": {"s3": {"uri": "s3://bucket/a\x00b"}}}, "spec.output.s3.uri"),
    ({"model": {"s3": {"uri": "s3://bucket/m", "region": "eu\x00"}}}, "spec.model.s3.region"),
    (
        {"dataset": {"s3": {"uri": "s3://bucket/d", "endpoint": "https://s3.example/\x00"}}},
        "spec.dataset.s3.endpoint",
    ),
    ({"model": {"name": "org/m", "revision": "main\x00"}}, "spec.model.revision"),
    ({"dataset": {"name": "org/d", "configName": "en\x00"}}, "spec.dataset.configName"),
    ({"dataset": {"name": "org/d", "revision": "v1\x00"}}, "spec.dataset.revision"),
]


@pytest.mark.parametrize(("data", "field"), NUL_FIELDS)
def test_a_nul_character_is_refused_naming_the_field(data: dict, field: str) -> None:
    lines = errors_of(data)
    assert f"{field}: must not contain a NUL character" in lines, lines


@pytest.mark.parametrize("key", ["train", "train.txt", "train.jsonl.gz"])
def test_a_dataset_configmap_key_must_say_its_format(key: str) -> None:
    with pytest.raises(ValidationError) as info:
        TrainerConfig.from_mapping({"dataset": {"configMap": {"name": "chats", "key": key}}})
    assert any("must end in .jsonl or .json" in line for line in describe_errors(info.value))


@pytest.mark.parametrize(
    ("model", "shown"),
    [
        ({"name": "unsloth/gpt-oss-20b"}, "unsloth/gpt-oss-20b"),
        (
            {"pvc": {"claimName": "models", "path": "cache/gpt-oss-20b-unsloth-bnb-4bit"}},
            "gpt-oss-20b-unsloth-bnb-4bit",
        ),
        ({"pvc": {"claimName": "gpt-oss"}}, "gpt-oss"),
        ({"s3": {"uri": "s3://models/gpt-oss-20b/"}}, "gpt-oss-20b"),
        ({"path": "/models/tiny-gpt-oss"}, "tiny-gpt-oss"),
    ],
)
def test_the_model_is_named_by_its_id_or_the_end_of_its_location(
    model: dict[str, Any], shown: str
) -> None:
    assert TrainerConfig.from_mapping({"model": model}).model.display_name == shown
