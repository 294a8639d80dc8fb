"""The run's outputs: where they go (``make_target``), whether a previous attempt already
wrote them all (``report_finished``), and the final adapter and the optional merged export,
written, committed with a manifest and published (``write_final_outputs``)."""

from __future__ import annotations

import logging
from collections.abc import Collection
from pathlib import Path
from typing import Any

from finetune_api.config import TrainerConfig
from finetune_api.config.output import pvc_uri
from finetune_api.contract import (
    CheckpointRef,
    TerminationMessage,
    TrainerProvenance,
    TrainerReason,
)

from .backends import Backend
from .final_model import choose_final_weights
from .metrics import LOSS_PLOT_FILE, METRICS_FILE, MetricsLog, plot_loss
from .model_card import write_model_card
from .provenance import manifest_digest, write_provenance, written_provenance
from .resume import incompatible
from .run_progress import RunProgress
from .runtime import OUTPUT_STAGING
from .sources import pvc_local_path
from .storage.checkpoints import FINAL_MODEL_DIR, MERGED_16BIT_DIR, checkpoint_name
from .storage.manifest import ArtifactKind, Manifest, utc_now
from .storage.targets import LocalTarget, OutputTarget, S3Target

log = logging.getLogger(__name__)


def make_target(config: TrainerConfig, scratch: Path) -> OutputTarget:
    """The output location of ``config.output``; S3 is staged under ``scratch``."""
    output = config.output
    limit = config.training.save_total_limit
    if output.s3 is not None:
        from .storage.s3 import S3Store

        store = S3Store.for_location(output.s3, "output")
        staging = scratch / OUTPUT_STAGING / output.s3.bucket / (output.s3.prefix or "_root")
        return S3Target(store, output.s3.prefix, staging, limit)
    if output.pvc is not None:
        return LocalTarget(pvc_local_path(output.pvc), pvc_uri(output.pvc), limit)
    root = Path(output.path or "outputs").expanduser().resolve()
    return LocalTarget(root, str(root), limit)


def report_finished(
    target: OutputTarget,
    config: TrainerConfig,
    fingerprint: str,
    accepted_fingerprints: Collection[str],
    progress: RunProgress,
) -> TerminationMessage | None:
    """The message of a run whose final outputs a previous attempt already wrote (e.g. the
    pod died right after), to report them again rather than train twice; None when there
    is training to do. Final outputs of another config are refused (InvalidInput)."""
    final = target.artifact_manifest(FINAL_MODEL_DIR)
    if final is None:
        return None
    if final.fingerprint not in accepted_fingerprints:
        raise incompatible(
            "final_model", target.uri(FINAL_MODEL_DIR), final.fingerprint, fingerprint
        )
    merged_wanted = config.output.merged_export == "merged_16bit"
    if merged_wanted and target.artifact_manifest(MERGED_16BIT_DIR) is None:
        return None
    log.info("%s is already complete (step %d); nothing to do", FINAL_MODEL_DIR, final.step)
    report = progress.report
    report.step = report.total_steps = final.step
    report.adapter_uri = target.uri(FINAL_MODEL_DIR)
    report.provenance = written_provenance(target.artifacts.root / FINAL_MODEL_DIR, final)
    if merged_wanted:
        report.merged_uri = target.uri(MERGED_16BIT_DIR)
    # The newest complete checkpoint: a newer directory may be one whose save or upload
    # never finished.
    newest = next(
        (
            candidate
            for candidate in target.resume_candidates()
            if target.artifact_manifest(checkpoint_name(candidate.step)) is not None
        ),
        None,
    )
    if newest is not None:
        progress.checkpoint = CheckpointRef(step=newest.step, uri=newest.uri)
    return progress.message(
        "succeeded",
        TrainerReason.ALREADY_COMPLETED,
        f"the adapter at {report.adapter_uri} exists",
    )


def write_final_outputs(
    config: TrainerConfig,
    fingerprint: str,
    backend: Backend,
    trainer: Any,
    model: Any,
    tokenizer: Any,
    target: OutputTarget,
    metrics_log: MetricsLog,
    progress: RunProgress,
) -> None:
    """Save the trained adapter (with the step records and the loss curve) and, when
    configured, the merged 16-bit model; commit each and publish it at ``target``."""
    step = int(trainer.state.global_step)
    work = target.artifacts.work_dir
    final_dir = work / FINAL_MODEL_DIR
    started = utc_now()
    chosen = choose_final_weights(config, trainer, model, target)
    progress.report.final_model = chosen
    trainer.save_model(str(final_dir))
    tokenizer.save_pretrained(str(final_dir))
    metrics_log.write_jsonl(final_dir / METRICS_FILE)
    plot_loss(
        metrics_log.records,
        final_dir / LOSS_PLOT_FILE,
        f"{config.model.display_name}: LoRA r={config.lora.rank}",
    )
    # After save_model: the card replaces PEFT's template README.md.
    record = progress.report.provenance or TrainerProvenance()
    write_provenance(final_dir, record)
    write_model_card(final_dir, config, record, metrics_log.records, step)
    manifest = _commit(
        target, final_dir, FINAL_MODEL_DIR, "final_model", step, fingerprint, started
    )
    progress.report.provenance = record.model_copy(
        update={"adapter_manifest_digest": manifest_digest(manifest)}
    )
    progress.report.adapter_uri = target.uri(FINAL_MODEL_DIR)
    if config.output.merged_export == "merged_16bit":
        merged_dir = work / MERGED_16BIT_DIR
        started = utc_now()
        log.info("exporting the merged 16-bit model (%s)", backend.description)
        backend.save_merged(model, tokenizer, merged_dir)
        _commit(target, merged_dir, MERGED_16BIT_DIR, "merged_16bit", step, fingerprint, started)
        progress.report.merged_uri = target.uri(MERGED_16BIT_DIR)
    target.artifacts.clear_work_dir()
    target.flush()


def _commit(
    target: OutputTarget,
    written: Path,
    name: str,
    kind: ArtifactKind,
    step: int,
    fingerprint: str,
    started: str,
) -> Manifest:
    target.ensure_owned()
    manifest = target.artifacts.commit(
        written, name, kind=kind, step=step, fingerprint=fingerprint, started_at=started
    )
    target.published(name, manifest)
    log.info("%s", target.committed(name, manifest))
    return manifest
