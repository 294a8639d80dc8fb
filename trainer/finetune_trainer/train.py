"""The training run: ``main(config, runtime) -> TerminationMessage``.

Order matters and is deliberate:
1. outputs prepared, an already finished run recognised, the resume point found -- cheap,
   and a wrong output location fails before any GPU time is spent;
2. the backend chosen (Unsloth must be imported before transformers, TRL and PEFT);
3. tokenizer and data prepared and checked -- bad data fails before the model loads;
4. the model loaded with LoRA, and TRL's SFTTrainer run with our callbacks;
5. the final adapter (and optionally a merged export) committed and published.
Every exit, expected or not, becomes a TerminationMessage; the CLI writes it and exits with
the matching code.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Literal

from finetune_api.config import TrainerConfig
from finetune_api.contract import TerminationMessage, TrainerReason

from .errors import IncompatibleCheckpoint, InvalidInput
from .memory_plan import MemoryPlan, estimate_fits, plan_memory
from .metrics import (
    LOSS_PLOT_FILE,
    METRICS_FILE,
    MetricsLog,
    MetricsServer,
    log_gpu_memory_after_load,
    plot_loss,
)
from .model_errors import load_tokenizer, model_errors
from .progress import RunProgress
from .remote_errors import TRACEBACK_LIMIT, bounded, details, failure_summary
from .resume import ResumePoint, find_resume_point, incompatible
from .runtime import OUTPUT_STAGING, RuntimeOptions
from .signals import Interrupted, StopRequest
from .sources import pvc_local_path, pvc_uri, resolve_dataset, resolve_model
from .storage.checkpoints import FINAL_MODEL_DIR, MERGED_16BIT_DIR, checkpoint_name
from .storage.manifest import ArtifactKind, utc_now
from .storage.targets import LocalTarget, OutputTarget, S3Target

log = logging.getLogger(__name__)

Stage = Literal["preparing", "loading", "training", "finishing"]
MEMORY_GUIDANCE = '"Memory guidance" in trainer/README.md'


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA allocation that failed (torch is only looked up, never imported, here)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(exc, torch.OutOfMemoryError)


def out_of_memory_message(
    config: TrainerConfig, stage: Stage, plan: MemoryPlan | None, exc: BaseException
) -> str:
    """What ran out of GPU memory and which settings to change. The same settings on the
    same GPU run out the same way, so this is reported as invalid input, not retried."""
    # torch's message goes on about allocator internals; its first sentences say enough.
    detail = ". ".join(str(exc).split(". ")[:3])[:300]
    model, training = config.model, config.training
    if stage == "finishing" and config.output.merged_export == "merged_16bit":
        return (
            f"GPU out of memory while exporting the merged 16-bit model ({detail}); set "
            "output.mergedExport to none and merge the adapter elsewhere, or use a GPU with "
            f"more memory; see {MEMORY_GUIDANCE}"
        )
    if stage == "loading":
        fix = (
            "set model.loadIn4bit to true"
            if not model.load_in_4bit
            else "use a smaller model or a GPU with more memory"
        )
        return (
            f"GPU out of memory while loading the model ({detail}); the model does not fit "
            f"this GPU: {fix}; see {MEMORY_GUIDANCE}"
        )
    asked = training.per_device_train_batch_size
    changes = [f"lower model.maxSeqLength (now {model.max_seq_length})"]
    if plan is not None and plan.per_device > asked:
        changes.insert(
            0,
            f"set training.autoMicroBatch to false (the automatic micro-batch ran "
            f"{plan.per_device} sequences at once, not the {asked} configured)",
        )
    planned = plan.gradient_checkpointing if plan else training.gradient_checkpointing
    if planned == "off" and training.gradient_checkpointing == "auto":
        changes.insert(
            0,
            "set training.gradientCheckpointing to unsloth (auto turned it off, estimating "
            "that this micro-batch fits without it)",
        )
    if plan is not None and not plan.offload_embedding and model.offload_embedding is None:
        changes.append(
            "set model.offloadEmbedding to true (the plan kept the input embedding on the GPU)"
        )
    if asked > 1:
        changes.append(
            f"lower training.perDeviceTrainBatchSize (now {asked}) and raise "
            f"training.gradientAccumulationSteps (now {training.gradient_accumulation_steps}) "
            "to keep the effective batch"
        )
    if training.gradient_checkpointing == "off":
        changes.append("turn training.gradientCheckpointing back on")
    if not model.load_in_4bit:
        changes.append("set model.loadIn4bit to true")
    return (
        f"GPU out of memory while training ({detail}); these settings do not fit this GPU "
        f"and would fail the same way again. Change them: {'; or '.join(changes)}. "
        f"See {MEMORY_GUIDANCE}"
    )


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


class TrainingRun:
    """One attempt at the configured training, from outputs to the final adapter."""

    def __init__(self, config: TrainerConfig, runtime: RuntimeOptions) -> None:
        self.config = config
        self.runtime = runtime
        self.fingerprint = config.fingerprint()
        self.accepted_fingerprints = {self.fingerprint, config.legacy_fingerprint()}
        self.progress = RunProgress()
        self.stop = StopRequest()
        self.metrics = MetricsServer()
        self.metrics_log = MetricsLog()
        self.target: OutputTarget | None = None
        self.stage: Stage = "preparing"
        self.memory_plan: MemoryPlan | None = None

    # --- the run ---------------------------------------------------------------------------
    def execute(self) -> TerminationMessage:
        message = self._attempt()
        # Closing waits for pending uploads, which may make a newer checkpoint durable; the
        # message reports the newest one, and a failure says where the next attempt starts.
        update: dict[str, object] = {"checkpoint": self.progress.checkpoint}
        if message.reason == TrainerReason.TRAINING_FAILED and self.progress.checkpoint is not None:
            step = self.progress.checkpoint.step
            update["message"] = (
                f"{message.message} (the next attempt resumes from checkpoint-{step})"
            )
        return message.model_copy(update=update)

    def _attempt(self) -> TerminationMessage:
        self.stop.install()
        try:
            self.metrics.start(self.runtime.metrics_host, self.runtime.metrics_port)
            return self._train()
        except InvalidInput as exc:
            log.error("%s", exc)
            return self.progress.message("invalid_input", exc.reason, str(exc))
        except Interrupted as exc:
            log.warning("%s; exiting", exc)
            return self.progress.message("interrupted", TrainerReason.INTERRUPTED, str(exc))
        except Exception as exc:
            # The whole story, remote answers included, goes to the log (bounded); the
            # message only what remote_errors lets through.
            trace = bounded(traceback.format_exc(), TRACEBACK_LIMIT)
            if is_out_of_memory(exc):
                log.error("out of GPU memory:\n%s", trace)
                text = out_of_memory_message(self.config, self.stage, self.memory_plan, exc)
                return self.progress.message("invalid_input", TrainerReason.OUT_OF_MEMORY, text)
            log.error("training failed:\n%s", trace)
            return self.progress.message(
                "failed", TrainerReason.TRAINING_FAILED, failure_summary(exc)
            )
        finally:
            self._close()

    def _close(self) -> None:
        # Publishing may upload for a while; a stop signal then is noted, not raised: an
        # exception out of here would replace the run's result and lose its message.
        with self.stop.during("finishing"):
            try:
                if self.target is not None:
                    try:
                        self.target.close()
                    except Exception as exc:
                        log.error("publishing outputs failed: %s", details(exc))
                    # Also when the failure was already reported (and closing then
                    # succeeds): staged output that never arrived may be the only copy.
                    if self.target.unpublished_output:
                        self.runtime.keep_scratch = True
                self.metrics.stop()
            finally:
                self.stop.uninstall()

    def _train(self) -> TerminationMessage:
        config = self.config
        scratch = self.runtime.scratch()
        self.target = target = make_target(config, scratch)
        log.info("output: %s (config fingerprint %s)", target.describe(), self.fingerprint)
        target.prepare()

        done = self._already_finished(target)
        if done is not None:
            return done
        resume = find_resume_point(target, self.fingerprint, self.accepted_fingerprints)
        if resume is not None:
            self.progress.resumed_from_step = resume.step
            self.progress.checkpoint = _ref(resume.step, resume.uri)
            self.metrics.update(resumed_from_step=resume.step, checkpoint_step=resume.step)
            self.metrics_log.restore(resume.path / METRICS_FILE, resume.step)

        from .backends import select_backend

        backend = select_backend(self.runtime.backend, scratch)
        log.info("backend: %s", backend.description)

        from .data import load_rows, prepare_dataset
        from .plan import plan_steps

        model_source = resolve_model(config.model, scratch)
        token = self.runtime.hf_token
        tokenizer = load_tokenizer(config.model, model_source, token)
        rows = load_rows(
            config.dataset,
            resolve_dataset(config.dataset, scratch),
            token=token,
            cache_dir=scratch / "datasets-cache",
        )
        prepared = prepare_dataset(rows, tokenizer, config)
        log.info("data: %s", prepared.stats.to_dict())
        steps = plan_steps(len(prepared.dataset), config.training)
        self.progress.total_steps = steps.total_steps
        self.metrics.update(total_steps=steps.total_steps)
        log.info(
            "plan: %d optimizer steps (%.2f epochs) of %d rows each",
            steps.total_steps,
            steps.epochs,
            steps.effective_batch,
        )

        self.memory_plan = plan = self._plan_memory(backend, model_source, token)
        started = time.monotonic()
        self.stage = "loading"
        with model_errors(config.model, model_source, stage="model", token=token):
            model, tokenizer = backend.load(config, model_source, token, plan)
        log.info("model loaded in %.1fs", time.monotonic() - started)
        log_gpu_memory_after_load()

        self.stage = "training"
        trainer = self._build_trainer(backend, plan, model, tokenizer, prepared.dataset, target)
        with self.stop.during("training"):
            trainer.train(resume_from_checkpoint=str(resume.path) if resume else None)
        self.progress.step = int(trainer.state.global_step)

        if self.progress.interrupted:
            with self.stop.during("finishing"):
                target.flush()
            checkpoint = self.progress.checkpoint
            where = f"checkpoint-{checkpoint.step} at {checkpoint.uri}" if checkpoint else "none"
            return self.progress.message(
                "interrupted",
                TrainerReason.INTERRUPTED,
                f"stopped by {self.stop.signal_name} after step {self.progress.step}; "
                f"checkpoint: {where}",
            )
        self.stage = "finishing"
        with self.stop.during("finishing"):
            self._finish(backend, trainer, model, tokenizer, target)
        return self.progress.message(
            "succeeded",
            TrainerReason.COMPLETED,
            f"trained {self.progress.step} steps; adapter at {self.progress.adapter_uri}",
        )

    # --- pieces ----------------------------------------------------------------------------
    def _already_finished(self, target: OutputTarget) -> TerminationMessage | None:
        """A previous attempt already wrote the final adapter (e.g. the pod died right
        after): report it again rather than train twice."""
        final = target.artifact_manifest(FINAL_MODEL_DIR)
        if final is None:
            return None
        if final.fingerprint not in self.accepted_fingerprints:
            raise incompatible(
                "final_model", target.uri(FINAL_MODEL_DIR), final.fingerprint, self.fingerprint
            )
        merged_wanted = self.config.output.merged_export == "merged_16bit"
        if merged_wanted and target.artifact_manifest(MERGED_16BIT_DIR) is None:
            return None
        log.info("%s is already complete (step %d); nothing to do", FINAL_MODEL_DIR, final.step)
        self.progress.step = self.progress.total_steps = final.step
        self.progress.adapter_uri = target.uri(FINAL_MODEL_DIR)
        if merged_wanted:
            self.progress.merged_uri = target.uri(MERGED_16BIT_DIR)
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
            self.progress.checkpoint = _ref(newest.step, newest.uri)
        return self.progress.message(
            "succeeded",
            TrainerReason.ALREADY_COMPLETED,
            f"the adapter at {self.progress.adapter_uri} exists",
        )

    def _plan_memory(self, backend: Any, model_source: Any, token: str | None) -> MemoryPlan:
        """The micro-batch, gradient checkpointing and embedding placement for this GPU
        (memory_plan.py), from the model's config.json before its weights load."""
        from .plan import read_model_config

        config = self.config
        budget = backend.memory_budget(self.runtime.gpu_memory_fraction)
        fits, unsized = None, "no GPU to size it on"
        if budget is not None:
            unsized = "no memory estimate for this model's config.json"
            model_config = read_model_config(model_source, token)
            try:
                fits = estimate_fits(config, model_config, budget) if model_config else None
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("no memory estimate from this model's config.json (%r)", exc)
        if config.model.offload_embedding and not backend.offloads_embedding:
            log.warning(
                "model.offloadEmbedding is ignored: %s keeps it with the model", backend.description
            )
        plan = plan_memory(
            config, fits, can_offload_embedding=backend.offloads_embedding, unsized=unsized
        )
        embedding = "in host memory" if plan.offload_embedding else "on the GPU"
        log.info(
            "micro-batch %d x %d accumulation, gradient checkpointing %s, embedding %s: %s",
            plan.per_device,
            plan.accumulation,
            plan.gradient_checkpointing,
            embedding if budget is not None else "with the model",
            plan.reason,
        )
        return plan

    def _build_trainer(
        self,
        backend: Any,
        plan: MemoryPlan,
        model: Any,
        tokenizer: Any,
        dataset: Any,
        target: OutputTarget,
    ) -> Any:
        from .callbacks import BatchAccounting, RunTracker, make_callbacks
        from .lora import sft_config_kwargs

        config = self.config
        precision = backend.precision(config)
        kwargs = sft_config_kwargs(
            config.training,
            output_dir=target.artifacts.work_dir,
            max_length=config.model.max_seq_length,
            optimizer=backend.optimizer(config.training.optimizer),
            gradient_checkpointing=backend.trainer_gradient_checkpointing(
                plan.gradient_checkpointing
            ),
            bf16=precision.bf16,
            fp16=precision.fp16,
            use_cpu=backend.use_cpu,
            per_device_batch=plan.per_device,
            gradient_accumulation=plan.accumulation,
        )
        if kwargs["gradient_checkpointing"]:
            kwargs["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
        args = backend.sft_config_class()(**kwargs)
        trainer = backend.sft_trainer_class()(
            model=model, args=args, train_dataset=dataset, processing_class=tokenizer
        )
        accounting = BatchAccounting(trainer.data_collator)
        trainer.data_collator = accounting
        tracker = RunTracker(
            target=target,
            fingerprint=self.fingerprint,
            progress=self.progress,
            metrics=self.metrics,
            metrics_log=self.metrics_log,
            stop=self.stop,
            accounting=accounting,
            micro_batches_per_step=args.gradient_accumulation_steps,
        )
        from transformers.trainer_callback import ProgressCallback

        trainer.remove_callback(ProgressCallback)
        for callback in make_callbacks(tracker):
            trainer.add_callback(callback)
        log.info(
            "SFTTrainer: %s precision, optimizer %s, micro-batch %d x %d accumulation",
            precision.label,
            getattr(args.optim, "value", args.optim),
            args.per_device_train_batch_size,
            args.gradient_accumulation_steps,
        )
        return trainer

    def _finish(
        self, backend: Any, trainer: Any, model: Any, tokenizer: Any, target: OutputTarget
    ) -> None:
        step = int(trainer.state.global_step)
        work = target.artifacts.work_dir
        final_dir = work / FINAL_MODEL_DIR
        started = utc_now()
        trainer.save_model(str(final_dir))
        tokenizer.save_pretrained(str(final_dir))
        self.metrics_log.write_jsonl(final_dir / METRICS_FILE)
        model_name = self.config.model.name or self.config.model.source_kind
        title = f"{model_name} LoRA r={self.config.lora.rank}"
        plot_loss(self.metrics_log.records, final_dir / LOSS_PLOT_FILE, title)
        self._commit(target, final_dir, FINAL_MODEL_DIR, "final_model", step, started)
        self.progress.adapter_uri = target.uri(FINAL_MODEL_DIR)
        if self.config.output.merged_export == "merged_16bit":
            merged_dir = work / MERGED_16BIT_DIR
            started = utc_now()
            log.info("exporting the merged 16-bit model (%s)", backend.description)
            backend.save_merged(model, tokenizer, merged_dir)
            self._commit(target, merged_dir, MERGED_16BIT_DIR, "merged_16bit", step, started)
            self.progress.merged_uri = target.uri(MERGED_16BIT_DIR)
        target.artifacts.clear_work_dir()
        target.flush()

    def _commit(
        self,
        target: OutputTarget,
        written: Path,
        name: str,
        kind: ArtifactKind,
        step: int,
        started: str,
    ) -> None:
        manifest = target.artifacts.commit(
            written, name, kind=kind, step=step, fingerprint=self.fingerprint, started_at=started
        )
        target.published(name, manifest)
        log.info("%s complete: %d files -> %s", name, len(manifest.files), target.uri(name))


def _ref(step: int, uri: str) -> Any:
    from finetune_api.contract import CheckpointRef

    return CheckpointRef(step=step, uri=uri)


def main(config: TrainerConfig, runtime: RuntimeOptions) -> TerminationMessage:
    """Train as configured; always returns the termination message (never raises for a
    training failure: the message says what happened, the CLI maps it to the exit code)."""
    return TrainingRun(config, runtime).execute()


__all__ = ["IncompatibleCheckpoint", "ResumePoint", "main", "make_target"]
