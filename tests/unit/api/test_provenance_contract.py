"""The trainer's provenance record in the termination message: compact, bounded, and
never the reason a message does not fit the kubelet's 4 KiB."""

from __future__ import annotations

from finetune_api.contract import (
    PROVENANCE_TEXT_LIMIT,
    TERMINATION_MESSAGE_LIMIT,
    CheckpointRef,
    TerminationMessage,
    TrainerProvenance,
    provenance_digest,
)

DIGEST = "sha256:" + "a" * 64


def full_record(**update: object) -> TrainerProvenance:
    fields: dict[str, object] = {
        "model_source": "unsloth/gpt-oss-20b",
        "model_revision": "c" * 40,
        "dataset_source": "HuggingFaceH4/Multilingual-Thinking",
        "dataset_digest": DIGEST,
        "dataset_rows": 1000,
        "config_fingerprint": "0123456789abcdef",
        "trainer_version": "0.1.0",
        "torch_version": "2.8.0+cu128",
        "transformers_version": "4.56.2",
        "peft_version": "0.17.1",
        "trl_version": "0.23.0",
        "unsloth_version": "2025.9.1",
        "gpu_model": "NVIDIA H100 80GB HBM3",
        "gpu_count": 8,
        "adapter_manifest_digest": DIGEST,
    }
    fields.update(update)
    return TrainerProvenance.model_validate(fields)


def test_a_succeeded_run_s_long_message_is_cut_and_the_record_kept() -> None:
    message = TerminationMessage(
        status="succeeded",
        reason="Completed",
        message="x" * 10_000,
        adapter_uri="s3://bucket/" + "p" * 900 + "/final_model",
        checkpoint=CheckpointRef(step=10, uri="s3://bucket/" + "p" * 900 + "/checkpoint-10"),
        provenance=full_record(),
    )
    text = message.encode()
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    decoded = TerminationMessage.decode(text)
    assert decoded is not None and decoded.provenance == full_record()
    assert decoded.message.endswith("[truncated]")


def test_a_failed_run_keeps_its_message_before_its_record() -> None:
    """No adapter to describe, and a message that says what to fix: the record goes first."""
    explanation = "w" * 3500
    message = TerminationMessage(
        status="failed",
        reason="TrainingFailed",
        message=explanation,
        checkpoint=CheckpointRef(step=10, uri="s3://bucket/runs/a/checkpoint-10"),
        provenance=full_record(),
    )
    assert len(message.model_dump_json(by_alias=True).encode()) > TERMINATION_MESSAGE_LIMIT
    decoded = TerminationMessage.decode(message.encode())
    assert decoded is not None and decoded.provenance is None
    assert decoded.message == explanation


def test_each_text_of_the_record_is_bounded() -> None:
    record = full_record(model_source="m" * 5000, dataset_source="d" * 5000)
    assert len(record.model_source or "") == PROVENANCE_TEXT_LIMIT
    assert len(record.to_wire().__repr__()) < 2048


def test_the_record_gives_way_when_locations_leave_no_room() -> None:
    uri = "s3://bucket/" + "p" * 1000  # the longest an S3 location may be, near enough
    message = TerminationMessage(
        status="succeeded",
        reason="Completed",
        message="done",
        adapter_uri=uri + "/final_model",
        merged_uri=uri + "/merged_16bit",
        checkpoint=CheckpointRef(step=10, uri=uri + "/checkpoint-10"),
        provenance=full_record(model_source="m" * 300, dataset_source="d" * 300),
    )
    text = message.encode()
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    decoded = TerminationMessage.decode(text)
    assert decoded is not None and decoded.adapter_uri == uri + "/final_model"
    assert decoded.provenance is None


def test_the_digest_covers_each_part_and_the_image() -> None:
    base = provenance_digest("rev", DIGEST, "fp")
    assert base == provenance_digest("rev", DIGEST, "fp")
    others = {
        provenance_digest("rev2", DIGEST, "fp"),
        provenance_digest("rev", "sha256:" + "b" * 64, "fp"),
        provenance_digest("rev", DIGEST, "fp2"),
        provenance_digest("rev", DIGEST, "fp", "sha256:" + "e" * 64),
    }
    assert base not in others and len(others) == 4
