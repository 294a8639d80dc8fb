"""status.provenance: the operator's part (the config it wrote into the Job, the image the
node reports) as soon as the trainer runs, the trainer's record when the run ends, the
digest once all its parts are known; every field bounded, and each from the objects as
the cache keeps them."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from finetune_api.config import OutputSpec
from finetune_api.contract import TerminationMessage, TrainerProvenance, provenance_digest
from finetune_api.status import MAX_SHORT, FineTuneJobStatus
from finetune_operator.builders import Owner, build_job
from finetune_operator.builders.trainer_config import config_file_text, resolved_trainer_config
from finetune_operator.cache import trim_job, trim_pod
from finetune_operator.config import OperatorConfig
from finetune_operator.observe import observe
from finetune_operator.status_update import next_status

from .conftest import pod, spec_of, terminated

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
SPEC = {"model": {"name": "unsloth/gpt-oss-20b"}, "dataset": {"name": "org/data"}}
IMAGE = "registry.example/trainer:1.0"
DIGEST = "sha256:" + "d" * 64
IMAGE_ID = f"registry.example/trainer@{DIGEST}"
ROWS = "sha256:" + "a" * 64


def _job(owner: Owner, settings: OperatorConfig, spec: dict[str, Any] = SPEC) -> dict[str, Any]:
    job = build_job(spec_of(spec), owner, settings)
    job["metadata"]["uid"] = "0b1c2d3e-0000-4000-8000-00000000000a"  # conftest.JOB_UID
    job["status"] = {"active": 1, "startTime": "T1"}
    return trim_job(job)


def _pod(state: dict[str, Any], image_id: str = IMAGE_ID, **kwargs: Any) -> dict[str, Any]:
    body = pod("Running" if "running" in state else "Failed", state=state, **kwargs)
    body["status"]["containerStatuses"][0].update({"image": IMAGE, "imageID": image_id})
    return trim_pod({"apiVersion": "v1", "kind": "Pod", **body})


def record(**update: Any) -> TrainerProvenance:
    fields: dict[str, Any] = {
        "model_source": "unsloth/gpt-oss-20b",
        "model_revision": "c" * 40,
        "dataset_source": "org/data",
        "dataset_digest": ROWS,
        "dataset_rows": 1000,
        "config_fingerprint": "claimed-by-the-trainer",
        "trainer_version": "0.1.0",
        "torch_version": "2.8.0",
        "transformers_version": "4.56.2",
        "peft_version": "0.17.1",
        "trl_version": "0.23.0",
        "gpu_model": "NVIDIA H100 80GB HBM3",
        "gpu_count": 1,
        "adapter_manifest_digest": "sha256:" + "e" * 64,
    }
    fields.update(update)
    return TrainerProvenance.model_validate(fields)


def _status(previous: dict[str, Any], job: dict[str, Any], pods: list[dict[str, Any]]):
    update = next_status(
        previous,
        observation=observe(job, pods),
        progress=None,
        output=OutputSpec.model_validate({"pvc": {"claimName": "outputs"}}),
        job_name="job",
        generation=1,
        now=NOW,
    )
    return update


def _finished(job: dict[str, Any], summary: TerminationMessage) -> dict[str, Any]:
    done = dict(job)
    done["status"] = {
        "succeeded": 1,
        "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": "T9"}],
    }
    return done


def test_the_operator_part_is_written_as_soon_as_the_trainer_runs(
    owner: Owner, settings: OperatorConfig
) -> None:
    job = _job(owner, settings)
    text = config_file_text(resolved_trainer_config(spec_of(SPEC), owner))
    patch = _status({}, job, [_pod({"running": {}})]).patch
    assert patch["phase"] == "Running"
    assert patch["provenance"] == {
        "configDigest": "sha256:" + hashlib.sha256(text.encode()).hexdigest(),
        "configFingerprint": spec_of(SPEC).trainer_config().fingerprint(),
        "image": IMAGE,
        "imageId": IMAGE_ID,
        "imageDigest": DIGEST,
    }


def test_nothing_is_recorded_before_the_node_reports_an_image(
    owner: Owner, settings: OperatorConfig
) -> None:
    job = _job(owner, settings)
    assert "provenance" not in _status({}, job, [_pod({"waiting": {}}, image_id="")]).patch


def test_the_trainer_record_and_the_digest_come_when_the_run_ends(
    owner: Owner, settings: OperatorConfig
) -> None:
    job = _job(owner, settings)
    running = _status({}, job, [_pod({"running": {}})]).patch
    summary = TerminationMessage(
        status="succeeded", reason="Completed", adapter_uri="pvc://o/f", provenance=record()
    )
    ended = _pod(terminated(0, summary.encode(), reason="Completed"))
    patch = _status(running, _finished(job, summary), [ended]).patch
    provenance = patch["provenance"]
    assert patch["phase"] == "Succeeded"
    fingerprint = spec_of(SPEC).trainer_config().fingerprint()
    # The operator's fingerprint, of the config it wrote, not the trainer's claim.
    assert provenance["configFingerprint"] == fingerprint
    assert provenance["modelRevision"] == "c" * 40
    assert provenance["datasetDigest"] == ROWS and provenance["datasetRows"] == 1000
    assert provenance["gpuModel"] == "NVIDIA H100 80GB HBM3" and provenance["gpuCount"] == 1
    assert provenance["adapterManifestDigest"] == "sha256:" + "e" * 64
    assert provenance["digest"] == provenance_digest("c" * 40, ROWS, fingerprint, DIGEST)
    # Recorded once: the same world writes nothing new.
    again = _status(patch, _finished(job, summary), [ended])
    assert not again.changed_from(patch)


def test_the_digest_is_the_same_for_two_finetunejobs_that_train_the_same_thing(
    settings: OperatorConfig,
) -> None:
    summary = TerminationMessage(status="succeeded", reason="Completed", provenance=record())
    ended = _pod(terminated(0, summary.encode(), reason="Completed"))
    digests = []
    for name, uid in (("first", "uid-1"), ("second", "uid-2")):
        job = _job(Owner(name=name, namespace="ml", uid=uid), settings)
        digests.append(_status({}, _finished(job, summary), [ended]).patch["provenance"])
    # Each writes to its own output directory: its config file differs, not its training.
    assert digests[0]["configDigest"] != digests[1]["configDigest"]
    assert digests[0]["digest"] == digests[1]["digest"]
    other = _job(
        Owner(name="third", namespace="ml", uid="uid-3"), settings, {**SPEC, "lora": {"rank": 16}}
    )
    changed = _status({}, _finished(other, summary), [ended]).patch["provenance"]
    assert changed["digest"] != digests[0]["digest"]


def test_an_image_without_a_digest_is_recorded_as_reported(
    owner: Owner, settings: OperatorConfig
) -> None:
    job = _job(owner, settings)
    summary = TerminationMessage(status="succeeded", reason="Completed", provenance=record())
    ended = _pod(terminated(0, summary.encode(), reason="Completed"), image_id=IMAGE)
    provenance = _status({}, _finished(job, summary), [ended]).patch["provenance"]
    assert provenance["imageId"] == IMAGE and "imageDigest" not in provenance
    fingerprint = provenance["configFingerprint"]
    assert provenance["digest"] == provenance_digest("c" * 40, ROWS, fingerprint, IMAGE)


def test_a_running_retry_does_not_take_an_earlier_attempt_s_record(
    owner: Owner, settings: OperatorConfig
) -> None:
    job = _job(owner, settings)
    summary = TerminationMessage(status="failed", reason="TrainingFailed", provenance=record())
    failed = _pod(terminated(1, summary.encode()), name="p1", created="T1")
    retry = _pod({"running": {}}, name="p2", created="T2")
    provenance = _status({}, job, [failed, retry]).patch["provenance"]
    assert "modelRevision" not in provenance and "digest" not in provenance
    assert provenance["imageDigest"] == DIGEST


def test_a_hostile_trainer_s_record_is_bounded_and_escaped(
    owner: Owner, settings: OperatorConfig
) -> None:
    job = _job(owner, settings)
    claims = record(model_source="\x1b[31m" + "m" * 250, gpu_model="\u202e" + "g" * 300)
    summary = TerminationMessage(status="succeeded", reason="Completed", provenance=claims)
    ended = _pod(terminated(0, summary.encode(), reason="Completed"))
    patch = _status({}, _finished(job, summary), [ended]).patch
    provenance = patch["provenance"]
    assert provenance["modelSource"].startswith("\\x1b[31m")
    assert provenance["gpuModel"].startswith("\\u202e")
    assert all(len(v) <= MAX_SHORT for v in provenance.values() if isinstance(v, str))
    FineTuneJobStatus.model_validate(patch)


def test_a_hostile_trainer_s_counts_beyond_any_run_are_dropped(
    owner: Owner, settings: OperatorConfig
) -> None:
    """A count the API server would refuse (beyond int64) would make it refuse the whole
    status: such a count is left out, as the trainer's metrics are held."""
    job = _job(owner, settings)
    claims = record(dataset_rows=10**25, gpu_count=-(10**30))
    summary = TerminationMessage(status="succeeded", reason="Completed", provenance=claims)
    ended = _pod(terminated(0, summary.encode(), reason="Completed"))
    provenance = _status({}, _finished(job, summary), [ended]).patch["provenance"]
    assert "datasetRows" not in provenance and "gpuCount" not in provenance
    assert provenance["modelRevision"] == "c" * 40


def _merged(stored: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """``stored`` after a JSON merge patch (RFC 7386), as the API server applies it."""
    result = dict(stored)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _merged(result[key], value)
        else:
            result[key] = value
    return result


def test_an_operator_field_the_newest_pod_lacks_is_removed_once_then_nothing_is_written(
    owner: Owner, settings: OperatorConfig
) -> None:
    job = _job(owner, settings)
    first = _status({}, job, [_pod({"running": {}}, name="p1", created="T1")])
    stored = _merged({}, first.patch)
    assert stored["provenance"]["imageDigest"] == DIGEST
    # The retry's node reports no digest: the stored one is of another pod.
    pods = [
        _pod({"terminated": {"exitCode": 1}}, name="p1", created="T1"),
        _pod({"running": {}}, name="p2", created="T2", image_id=IMAGE),
    ]
    second = _status(stored, job, pods)
    assert second.patch["provenance"]["imageDigest"] is None
    stored = _merged(stored, second.patch)
    assert "imageDigest" not in stored["provenance"]
    assert not _status(stored, job, pods).changed_from(stored)
