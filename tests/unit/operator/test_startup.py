"""A trainer that cannot start: which waiting states count, since when, and a message
that names the spec field behind the kubelet's words and the fix."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from finetune_operator.startup import startup_failure_message, stuck_start

from .conftest import pod, spec_of

CREDS = {"name": "s3-creds"}
S3_OUTPUT = {"output": {"s3": {"uri": "s3://bucket/run", "credentialsSecretRef": CREDS}}}


def waiting_pod(reason: str, message: str = "", **kwargs: Any) -> dict[str, Any]:
    return pod(
        "Pending",
        state={"waiting": {"reason": reason, "message": message}},
        **kwargs,
    )


def message_for(spec: dict[str, Any], reason: str, detail: str, image: str = "d/t:1") -> str:
    stuck = stuck_start(waiting_pod(reason, detail))
    assert stuck is not None
    return startup_failure_message(spec_of(spec), stuck, "ml", image)


@pytest.mark.parametrize(
    "reason",
    [
        "CreateContainerConfigError",
        "CreateContainerError",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
    ],
)
def test_states_the_kubelet_never_leaves_by_itself_count(reason: str) -> None:
    assert stuck_start(waiting_pod(reason)) is not None


@pytest.mark.parametrize("reason", ["ContainerCreating", "CrashLoopBackOff", "PodInitializing"])
def test_other_waiting_states_do_not(reason: str) -> None:
    assert stuck_start(waiting_pod(reason)) is None


def test_a_pod_being_deleted_is_not_stuck() -> None:
    assert stuck_start(waiting_pod("ErrImagePull", deleting=True)) is None


def test_the_wait_counts_from_the_binding_not_from_creation() -> None:
    # Time spent waiting for a free GPU is not time spent failing to start.
    scheduled = {
        "type": "PodScheduled",
        "status": "True",
        "lastTransitionTime": "2026-01-01T12:10:00Z",
    }
    stuck = stuck_start(
        waiting_pod("ErrImagePull", created="2026-01-01T12:00:00Z", conditions=[scheduled])
    )
    assert stuck is not None and stuck.since == datetime(2026, 1, 1, 12, 10, tzinfo=UTC)


def test_a_pod_without_usable_timestamps_leaves_the_start_to_the_caller() -> None:
    stuck = stuck_start(waiting_pod("ErrImagePull", created="T1"))
    assert stuck is not None and stuck.since is None


def test_a_missing_secret_names_the_field_that_names_it() -> None:
    message = message_for(S3_OUTPUT, "CreateContainerConfigError", 'secret "s3-creds" not found')
    assert message.startswith(
        "spec.output.s3.credentialsSecretRef.name: Secret s3-creds does not exist in "
        "namespace ml; create it (or correct the name), then delete and re-create"
    )
    assert "spec.lifecycle.startupDeadlineSeconds (300s)" in message
    assert 'kubelet: CreateContainerConfigError: secret "s3-creds" not found' in message


def test_every_field_naming_the_secret_is_named() -> None:
    spec = {
        **S3_OUTPUT,
        "model": {"name": "org/m", "tokenSecretRef": {"name": "s3-creds", "key": "hf"}},
    }
    message = message_for(spec, "CreateContainerConfigError", 'secret "s3-creds" not found')
    assert message.startswith(
        "spec.model.tokenSecretRef.name and spec.output.s3.credentialsSecretRef.name: "
    )


def test_a_missing_key_names_the_key_field() -> None:
    detail = "couldn't find key AWS_SECRET_ACCESS_KEY in Secret ml/s3-creds"
    message = message_for(S3_OUTPUT, "CreateContainerConfigError", detail)
    assert message.startswith(
        "spec.output.s3.credentialsSecretRef.secretAccessKeyKey: Secret s3-creds in "
        "namespace ml has no key AWS_SECRET_ACCESS_KEY; add the key"
    )


def test_a_secret_no_field_names_gets_the_kubelets_words_and_where_to_look() -> None:
    message = message_for(S3_OUTPUT, "CreateContainerConfigError", 'secret "other" not found')
    assert message.startswith("check the Secrets and keys the spec names")
    assert 'secret "other" not found' in message


def test_an_unpullable_image_names_spec_image() -> None:
    spec = {**S3_OUTPUT, "image": "registry.invalid/t:0"}
    message = message_for(spec, "ImagePullBackOff", 'Back-off pulling image "registry.invalid/t:0"')
    assert message.startswith("spec.image: the trainer image registry.invalid/t:0 cannot be")
    assert "spec.imagePullSecrets" in message


def test_an_unpullable_default_image_names_the_operators_setting() -> None:
    message = message_for(S3_OUTPUT, "ErrImagePull", "no such host", image="ghcr.io/x/t:1")
    assert "spec.image is unset" in message
    assert "default trainer image ghcr.io/x/t:1" in message and "trainer.image" in message


def test_the_kubelets_text_is_bounded_and_made_safe() -> None:
    detail = 'secret "s3-creds" not found \x1b[31m' + "x" * 100_000
    message = message_for(S3_OUTPUT, "CreateContainerConfigError", detail)
    assert "\x1b" not in message
    assert len(message) < 2500


def test_the_eval_sets_own_secret_and_config_map_are_named() -> None:
    evaluation = {"s3": {"uri": "s3://bucket/eval", "credentialsSecretRef": {"name": "eval-s3"}}}
    message = message_for(
        {"dataset": {"eval": evaluation}},
        "CreateContainerConfigError",
        'secret "eval-s3" not found',
    )
    assert message.startswith(
        "spec.dataset.eval.s3.credentialsSecretRef.name: Secret eval-s3 does not exist in "
        "namespace ml"
    )
    detail = "couldn't find key eval.jsonl in ConfigMap ml/chats"
    spec = {
        "dataset": {
            "configMap": {"name": "chats", "key": "train.jsonl"},
            "eval": {"configMap": {"name": "chats", "key": "eval.jsonl"}},
        }
    }
    message = message_for(spec, "CreateContainerConfigError", detail)
    assert message.startswith(
        "spec.dataset.eval.configMap.key: ConfigMap chats in namespace ml has no key eval.jsonl"
    )
