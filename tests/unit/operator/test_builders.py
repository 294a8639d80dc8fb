"""Every builder, from spec to the exact objects the operator creates."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from finetune_api import contract
from finetune_api.config import TrainerConfig
from finetune_operator.builders import Owner, build_job, lifecycle_patch
from finetune_operator.builders.trainer_config import (
    config_file_text,
    config_hash,
    resolved_trainer_config,
)
from finetune_operator.config import OperatorConfig
from finetune_operator.naming import (
    ANNOTATION_CONFIG_HASH,
    ANNOTATION_TRAINER_CONFIG,
    LABEL_KUEUE_QUEUE,
    LABEL_OWNER_UID,
    child_name,
)
from finetune_operator.references import claim_fields

from .conftest import UID, spec_of


def pod_spec(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]


def container(job: dict[str, Any]) -> dict[str, Any]:
    return pod_spec(job)["containers"][0]


def env_of(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(job)["env"]}


class TestNaming:
    def test_child_name_is_deterministic_and_fits_a_label(self) -> None:
        name = child_name("x" * 52, UID)
        assert name == child_name("x" * 52, UID)
        assert len(name) <= 63
        assert child_name("a", UID) != child_name("a", UID.replace("1", "2"))


def config_text(job: dict) -> str:
    """The trainer's config file as the pod sees it: its own annotation."""
    text: str = job["spec"]["template"]["metadata"]["annotations"][ANNOTATION_TRAINER_CONFIG]
    return text


class TestTrainerConfig:
    def test_holds_the_resolved_trainer_config(
        self, owner: Owner, settings: OperatorConfig
    ) -> None:
        spec = spec_of({"training": {"maxSteps": 5}, "resources": {"gpus": 2}})
        text = config_text(build_job(spec, owner, settings))
        config = TrainerConfig.from_mapping(yaml.safe_load(text))
        assert config.training.max_steps == 5
        # Only the trainer's part of the spec goes in: the trainer rejects unknown keys.
        assert "resources" not in yaml.safe_load(text)

    def test_the_file_is_marked_canonical(self, owner: Owner, settings: OperatorConfig) -> None:
        """The trainer reads a marked file one way: camelCase keys, no legacy renames."""
        spec = spec_of({"dataset": {"path": "/data/chats"}, "training": {"maxSteps": 5}})
        data = yaml.safe_load(config_text(build_job(spec, owner, settings)))
        assert {k: data[k] for k in ("apiVersion", "kind")} == contract.TRAINER_CONFIG_MARKER
        assert data["model"]["maxSeqLength"] == 1024  # canonical spelling throughout
        config = TrainerConfig.from_mapping(data)
        assert (config.dataset.path, config.dataset.name) == ("/data/chats", None)
        assert config == spec.trainer_config().model_copy(update={"output": config.output})

    def test_pvc_output_without_path_gets_a_unique_directory(
        self, owner: Owner, settings: OperatorConfig
    ) -> None:
        spec = spec_of({"output": {"pvc": {"claimName": "outs"}}})
        config = TrainerConfig.from_mapping(
            yaml.safe_load(config_text(build_job(spec, owner, settings)))
        )
        assert config.output.pvc is not None
        assert config.output.pvc.path == f"ml/gpt-oss-ml-{UID[:8]}"

    def test_the_pod_mounts_its_own_annotation_as_the_config_file(
        self, owner: Owner, settings: OperatorConfig
    ) -> None:
        job = build_job(spec_of({}), owner, settings)
        volumes = {v["name"]: v for v in pod_spec(job)["volumes"]}
        (item,) = volumes["config"]["downwardAPI"]["items"]
        assert item == {
            "path": contract.CONFIG_FILE,
            "fieldRef": {"fieldPath": f"metadata.annotations['{ANNOTATION_TRAINER_CONFIG}']"},
        }
        mount = next(m for m in container(job)["volumeMounts"] if m["name"] == "config")
        assert (mount["mountPath"], mount["readOnly"]) == (contract.CONFIG_DIR, True)
        assert job["metadata"]["annotations"][ANNOTATION_CONFIG_HASH] == config_hash(
            config_text(job)
        )

    def test_owned_by_the_finetunejob(self, owner: Owner, settings: OperatorConfig) -> None:
        ref = build_job(spec_of({}), owner, settings)["metadata"]["ownerReferences"][0]
        assert ref == {
            "apiVersion": "finetune.dev/v1alpha1",
            "kind": "FineTuneJob",
            "name": "gpt-oss-ml",
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }


class TestJobBuilder:
    def test_identity_labels_and_owner(self, owner: Owner, settings: OperatorConfig) -> None:
        job = build_job(spec_of({}), owner, settings)
        meta = job["metadata"]
        assert meta["name"] == owner.child_name
        assert meta["labels"][LABEL_OWNER_UID] == UID
        assert meta["ownerReferences"][0]["uid"] == UID
        assert job["spec"]["template"]["metadata"]["labels"] == meta["labels"]

    def test_runs_the_trainer_with_its_config(self, owner: Owner, settings: OperatorConfig) -> None:
        job = build_job(spec_of({}), owner, settings)
        c = container(job)
        assert c["command"] == ["finetune-train", "--config", contract.CONFIG_PATH]
        assert c["image"] == "registry.example/trainer:1.0"
        assert c["ports"] == [{"name": "metrics", "containerPort": contract.METRICS_PORT}]
        assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
        volumes = {v["name"]: v for v in pod_spec(job)["volumes"]}
        assert "downwardAPI" in volumes["config"]

    def test_image_override(self, owner: Owner, settings: OperatorConfig) -> None:
        job = build_job(spec_of({"image": "my/trainer@sha256:" + "a" * 64}), owner, settings)
        assert container(job)["image"].startswith("my/trainer@sha256:")

    @pytest.mark.parametrize(
        "resources, limits, requests",
        [
            ({}, {"nvidia.com/gpu": "1"}, None),
            (
                {"gpus": 4, "cpu": "8", "memory": "64Gi"},
                {"nvidia.com/gpu": "4", "memory": "64Gi"},
                {"cpu": "8", "memory": "64Gi"},
            ),
            ({"gpus": 1, "gpuResourceName": "amd.com/gpu"}, {"amd.com/gpu": "1"}, None),
            ({"gpus": 0}, None, None),
        ],
    )
    def test_resources(self, owner, settings, resources, limits, requests) -> None:
        res = container(build_job(spec_of({"resources": resources}), owner, settings))["resources"]
        assert res.get("limits") == limits
        assert res.get("requests") == requests

    def test_restricted_pod_security(self, owner: Owner, settings: OperatorConfig) -> None:
        job = build_job(spec_of({}), owner, settings)
        pod = pod_spec(job)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == settings.trainer_uid
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        sc = container(job)["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["readOnlyRootFilesystem"] is True
        assert pod["automountServiceAccountToken"] is False
        assert pod["restartPolicy"] == "Never"

    def test_failure_policy(self, owner: Owner, settings: OperatorConfig) -> None:
        spec = build_job(spec_of({}), owner, settings)["spec"]
        rules = spec["podFailurePolicy"]["rules"]
        assert rules[0] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}
        assert rules[1]["action"] == "FailJob"
        assert rules[1]["onExitCodes"]["values"] == [int(contract.ExitCode.INVALID_INPUT)]
        assert spec["podReplacementPolicy"] == "Failed"
        assert spec["backoffLimit"] == 3

    def test_lifecycle_fields(self, owner: Owner, settings: OperatorConfig) -> None:
        lifecycle = {
            "suspend": True,
            "backoffLimit": 7,
            "activeDeadlineSeconds": 3600,
            "ttlSecondsAfterFinished": 60,
        }
        spec = build_job(spec_of({"lifecycle": lifecycle}), owner, settings)["spec"]
        assert spec["suspend"] is True
        assert spec["backoffLimit"] == 7
        assert spec["activeDeadlineSeconds"] == 3600
        # The TTL waits until the FineTuneJob's status holds the outcome (see lifecycle_patch).
        assert "ttlSecondsAfterFinished" not in spec

    def test_unset_deadlines_are_left_out(self, owner: Owner, settings: OperatorConfig) -> None:
        spec = build_job(spec_of({}), owner, settings)["spec"]
        assert "activeDeadlineSeconds" not in spec and "ttlSecondsAfterFinished" not in spec
        assert spec["suspend"] is False

    def test_kueue_queue_starts_suspended(self, owner: Owner, settings: OperatorConfig) -> None:
        job = build_job(spec_of({"scheduling": {"queueName": "gpu-queue"}}), owner, settings)
        assert job["metadata"]["labels"][LABEL_KUEUE_QUEUE] == "gpu-queue"
        assert job["spec"]["suspend"] is True

    def test_secrets_only_by_reference(self, owner: Owner, settings: OperatorConfig) -> None:
        spec = spec_of(
            {
                "model": {"name": "org/m", "tokenSecretRef": {"name": "hf", "key": "token"}},
                "output": {"s3": {"uri": "s3://bkt/p", "credentialsSecretRef": {"name": "s3c"}}},
            }
        )
        env = env_of(build_job(spec, owner, settings))
        assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf", "key": "token"}
        access = env[contract.Env.s3("output", "ACCESS_KEY_ID")]
        assert access["valueFrom"]["secretKeyRef"] == {"name": "s3c", "key": "AWS_ACCESS_KEY_ID"}
        assert all("value" not in e for e in env.values() if "valueFrom" in e)
        assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"

    def test_an_eval_set_on_s3_has_its_own_credentials_by_reference(
        self, owner: Owner, settings: OperatorConfig
    ) -> None:
        creds = {"name": "eval-s3", "sessionTokenKey": "token"}
        spec = spec_of(
            {
                "dataset": {
                    "s3": {"uri": "s3://bkt/train", "credentialsSecretRef": {"name": "train-s3"}},
                    "eval": {"s3": {"uri": "s3://bkt/eval", "credentialsSecretRef": creds}},
                }
            }
        )
        env = env_of(build_job(spec, owner, settings))
        assert env["FTO_S3_EVAL_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {
            "name": "eval-s3",
            "key": "AWS_ACCESS_KEY_ID",
        }
        assert env["FTO_S3_EVAL_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
            "name": "eval-s3",
            "key": "AWS_SECRET_ACCESS_KEY",
        }
        assert env["FTO_S3_EVAL_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"] == {
            "name": "eval-s3",
            "key": "token",
        }
        dataset = env[contract.Env.s3("dataset", "ACCESS_KEY_ID")]
        assert dataset["valueFrom"]["secretKeyRef"]["name"] == "train-s3"
        assert all("value" not in e for e in env.values() if "valueFrom" in e)

    def test_the_trainer_knows_its_run_and_its_grace_period(
        self, owner: Owner, settings: OperatorConfig
    ) -> None:
        """The output lease names the FineTuneJob, so its next pod takes over at once; the
        exit held for failed uploads ends inside the pod's grace period."""
        job = build_job(spec_of({}), owner, settings)
        env = env_of(job)
        assert env[contract.Env.RUN_ID]["value"] == owner.uid
        grace = job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert env[contract.Env.GRACE_PERIOD_SECONDS]["value"] == str(grace)

    def test_scheduling(self, owner: Owner, settings: OperatorConfig) -> None:
        scheduling = {
            "nodeSelector": {"pool": "h200"},
            "tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}
            ],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "zone", "operator": "In", "values": ["a"]}
                                ]
                            }
                        ]
                    }
                }
            },
            "priorityClassName": "training",
        }
        pod = pod_spec(build_job(spec_of({"scheduling": scheduling}), owner, settings))
        assert pod["nodeSelector"] == {"pool": "h200"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
            "tolerations"
        ]
        assert scheduling["tolerations"][0] in pod["tolerations"]
        assert pod["affinity"] == scheduling["affinity"]
        assert pod["priorityClassName"] == "training"

    def test_operator_defaults_merge_under_the_spec(self, owner: Owner) -> None:
        settings = OperatorConfig(
            default_node_selector={"pool": "gpu", "tier": "a"},
            default_tolerations=({"key": "gpu-pool", "operator": "Exists"},),
        )
        spec = spec_of({"scheduling": {"nodeSelector": {"tier": "b"}}})
        pod = pod_spec(build_job(spec, owner, settings))
        assert pod["nodeSelector"] == {"pool": "gpu", "tier": "b"}
        assert {"key": "gpu-pool", "operator": "Exists"} in pod["tolerations"]


class TestVolumes:
    def mounts(self, job: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {m["mountPath"]: m for m in container(job)["volumeMounts"]}

    def test_claims_mounted_under_the_contract_root(self, owner, settings) -> None:
        spec = spec_of(
            {
                "model": {"pvc": {"claimName": "models", "path": "gpt-oss"}},
                "dataset": {"pvc": {"claimName": "data", "path": "mt.jsonl"}},
                "output": {"pvc": {"claimName": "outs"}},
            }
        )
        job = build_job(spec, owner, settings)
        mounts = self.mounts(job)
        assert mounts["/mnt/pvc/models"]["readOnly"] is True
        assert mounts["/mnt/pvc/data"]["readOnly"] is True
        assert mounts["/mnt/pvc/outs"]["readOnly"] is False
        claims = {
            v["persistentVolumeClaim"]["claimName"]
            for v in pod_spec(job)["volumes"]
            if "persistentVolumeClaim" in v
        }
        assert claims == {"models", "data", "outs"}

    def test_an_eval_set_on_its_own_claim_is_mounted_read_only(self, owner, settings) -> None:
        spec = spec_of(
            {
                "dataset": {
                    "pvc": {"claimName": "data", "path": "train.jsonl"},
                    "eval": {"pvc": {"claimName": "held-out", "path": "eval.jsonl"}},
                },
                "output": {"pvc": {"claimName": "outs"}},
            }
        )
        mounts = self.mounts(build_job(spec, owner, settings))
        assert mounts["/mnt/pvc/held-out"]["readOnly"] is True
        assert claim_fields(spec)[-1] == ("spec.dataset.eval.pvc.claimName", "held-out")

    def test_shared_claim_for_input_and_output_is_writable(self, owner, settings) -> None:
        spec = spec_of(
            {
                "dataset": {"pvc": {"claimName": "work", "path": "data"}},
                "output": {"pvc": {"claimName": "work", "path": "out"}},
            }
        )
        job = build_job(spec, owner, settings)
        assert self.mounts(job)["/mnt/pvc/work"]["readOnly"] is False
        pvc_volumes = [v for v in pod_spec(job)["volumes"] if "persistentVolumeClaim" in v]
        assert len(pvc_volumes) == 1

    def test_writable_scratch_on_a_read_only_root(self, owner, settings) -> None:
        mounts = self.mounts(build_job(spec_of({}), owner, settings))
        for path in (contract.SCRATCH_DIR, "/tmp", "/dev/shm"):
            assert mounts[path].get("readOnly", False) is False
        assert mounts[contract.CONFIG_DIR]["readOnly"] is True

    def test_configmap_dataset(self, owner, settings) -> None:
        spec = spec_of({"dataset": {"configMap": {"name": "tiny", "key": "train.jsonl"}}})
        job = build_job(spec, owner, settings)
        assert self.mounts(job)["/mnt/configmap/tiny"]["readOnly"] is True

    def test_an_eval_set_in_a_configmap_is_mounted_beside_the_training_data(
        self, owner, settings
    ) -> None:
        held_out = {"configMap": {"name": "held-out", "key": "eval.jsonl"}}
        spec = spec_of(
            {"dataset": {"configMap": {"name": "tiny", "key": "train.jsonl"}, "eval": held_out}}
        )
        job = build_job(spec, owner, settings)
        mounts = self.mounts(job)
        assert mounts["/mnt/configmap/tiny"]["readOnly"] is True
        assert mounts["/mnt/configmap/held-out"]["readOnly"] is True
        volumes = {v["name"]: v for v in pod_spec(job)["volumes"] if "configMap" in v}
        assert volumes["dataset-configmap"]["configMap"]["name"] == "tiny"
        assert volumes["dataset-configmap-1"]["configMap"] == {
            "name": "held-out",
            "items": [{"key": "eval.jsonl", "path": "eval.jsonl"}],
        }

    def test_one_configmap_for_both_sets_is_one_volume_with_both_keys(
        self, owner, settings
    ) -> None:
        spec = spec_of(
            {
                "dataset": {
                    "configMap": {"name": "chats", "key": "train.jsonl"},
                    "eval": {"configMap": {"name": "chats", "key": "eval.jsonl"}},
                }
            }
        )
        job = build_job(spec, owner, settings)
        volumes = [v for v in pod_spec(job)["volumes"] if "configMap" in v]
        assert volumes == [
            {
                "name": "dataset-configmap",
                "configMap": {
                    "name": "chats",
                    "items": [
                        {"key": "train.jsonl", "path": "train.jsonl"},
                        {"key": "eval.jsonl", "path": "eval.jsonl"},
                    ],
                },
            }
        ]
        assert "/mnt/configmap/chats" in self.mounts(job)


class TestLifecyclePatch:
    def test_plain(self) -> None:
        spec = spec_of({"lifecycle": {"suspend": True, "backoffLimit": 2}})
        assert lifecycle_patch(spec.lifecycle, queued=False, outcome_recorded=False) == {
            "suspend": True,
            "backoffLimit": 2,
            "activeDeadlineSeconds": None,
            "ttlSecondsAfterFinished": None,
        }

    def test_the_ttl_waits_for_the_recorded_outcome(self) -> None:
        spec = spec_of({"lifecycle": {"ttlSecondsAfterFinished": 60}})
        patch = lifecycle_patch(spec.lifecycle, queued=False, outcome_recorded=False)
        assert patch["ttlSecondsAfterFinished"] is None
        patch = lifecycle_patch(spec.lifecycle, queued=False, outcome_recorded=True)
        assert patch["ttlSecondsAfterFinished"] == 60

    def test_queued_job_unsuspension_belongs_to_kueue(self) -> None:
        spec = spec_of({})
        assert "suspend" not in lifecycle_patch(spec.lifecycle, queued=True, outcome_recorded=False)
        suspended = spec_of({"lifecycle": {"suspend": True}})
        patch = lifecycle_patch(suspended.lifecycle, queued=True, outcome_recorded=False)
        assert patch["suspend"] is True


def test_the_fast_yaml_emitter_writes_what_pyyaml_would(owner: Owner) -> None:
    spec = spec_of(
        {
            "dataset": {"pvc": {"claimName": "d", "path": "chats/ü ✓.jsonl"}},
            "lora": {"targetModules": ["q_proj", "k_proj"]},
            "training": {"learningRate": 2.0e-4, "maxSteps": 7},
        }
    )
    config = resolved_trainer_config(spec, owner)
    _header, _, body = config_file_text(config).partition("\n")
    assert body == yaml.safe_dump(config.to_marked_wire(), sort_keys=False)


class TestTrackingEnv:
    """training.reportTo: the FineTuneJob's identity and each tracker's Secret, by
    reference only; nothing at all for a FineTuneJob without trackers."""

    def test_no_trackers_no_tracking_env(self, owner: Owner, settings: OperatorConfig) -> None:
        env = env_of(build_job(spec_of({}), owner, settings))
        assert contract.Env.JOB_NAME not in env
        assert not any(name.startswith(("MLFLOW_", "WANDB_")) for name in env)

    def test_identity_and_secret_references(self, owner: Owner, settings: OperatorConfig) -> None:
        training = {
            "reportTo": ["mlflow", "wandb"],
            "mlflow": {
                "trackingUri": "https://mlflow.example.com",
                "credentialsSecretRef": {
                    "name": "mlflow-creds",
                    "usernameKey": "user",
                    "passwordKey": "pass",
                },
            },
            "wandb": {"apiKeySecretRef": {"name": "wandb", "key": "api-key"}},
        }
        env = env_of(build_job(spec_of({"training": training}), owner, settings))
        assert env[contract.Env.JOB_NAMESPACE]["value"] == owner.namespace
        assert env[contract.Env.JOB_NAME]["value"] == owner.name
        assert env[contract.Env.RUN_ID]["value"] == owner.uid
        assert env["MLFLOW_TRACKING_USERNAME"]["valueFrom"] == {
            "secretKeyRef": {"name": "mlflow-creds", "key": "user"}
        }
        assert env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"] == {
            "secretKeyRef": {"name": "mlflow-creds", "key": "pass"}
        }
        assert "MLFLOW_TRACKING_TOKEN" not in env
        assert env["WANDB_API_KEY"]["valueFrom"] == {
            "secretKeyRef": {"name": "wandb", "key": "api-key"}
        }

    def test_token_and_offline_wandb(self, owner: Owner, settings: OperatorConfig) -> None:
        training = {
            "reportTo": ["mlflow", "wandb", "tensorboard"],
            "mlflow": {
                "trackingUri": "https://mlflow.example.com",
                "credentialsSecretRef": {"name": "m", "tokenKey": "token"},
            },
        }
        env = env_of(build_job(spec_of({"training": training}), owner, settings))
        assert env["MLFLOW_TRACKING_TOKEN"]["valueFrom"] == {
            "secretKeyRef": {"name": "m", "key": "token"}
        }
        assert "MLFLOW_TRACKING_USERNAME" not in env
        assert "WANDB_API_KEY" not in env  # the trainer records W&B offline
