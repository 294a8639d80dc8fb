"""The training run: ``main(config, runtime) -> TerminationMessage``.

``TrainingRun._train`` runs the stages in order, and the order is deliberate:
1. outputs: the output's lease taken (no other live trainer writes there), the output
   prepared, artifacts of another config refused, an already finished run recognised, the
   resume point found -- cheap, and a wrong output location fails before any GPU time is
   spent (storage/lease.py, run_outputs.py, resume.py);
2. the backend chosen (Unsloth must be imported before transformers, TRL and PEFT);
3. inputs: tokenizer and data prepared and checked, the steps counted -- bad data fails
   before the model loads (input_pipeline.py);
4. memory planned for the GPU, from the model's config.json (memory_plan.py);
5. the model loaded with LoRA, and TRL's SFTTrainer built and run with our callbacks
   (sft_trainer.py);
6. the final adapter (and optionally a merged export) committed and published
   (run_outputs.py).
Every exit, expected or not, becomes a TerminationMessage; the CLI writes it and exits with
the matching code. Before it, uploads that failed are tried again within the pod's grace
period (from the stop signal, or from the failure), since their staged copies end with the
pod; what still never arrived is named in the message.
"""

from __future__ import annotations

import logging
import time
import traceback
from typing import Any

from finetune_api.config import TrainerConfig
from finetune_api.contract import CheckpointRef, TerminationMessage, TrainerReason, TrainerStage

from . import __version__
from .backends import Backend
from .errors import InvalidInput, output_access
from .evaluation import EvalTracker, outcome_text
from .input_pipeline import TrainingInputs, prepare_inputs
from .memory_plan import MemoryPlan, plan_for_backend
from .metrics import METRICS_FILE, MetricsLog, MetricsServer, log_gpu_memory_after_load
from .model_errors import model_errors
from .out_of_memory import Stage, is_out_of_memory, out_of_memory_message
from .provenance import run_provenance
from .remote_errors import TRACEBACK_LIMIT, bounded, details, failure_summary
from .resume import ResumePoint, check_output_fingerprints, find_resume_point
from .run_outputs import make_target, report_finished, write_final_outputs
from .run_progress import RunProgress
from .runtime import RuntimeOptions
from .signals import Interrupted, StopRequest
from .sources import ModelSource, resolve_model
from .storage.checkpoints import FINAL_MODEL_DIR
from .storage.lease import OutputLease
from .storage.targets import OutputTarget
from .tracking import RunTracking

log = logging.getLogger(__name__)

# Of the grace period, what is left for the exit itself (the termination message, the lease
# released) after the last upload try; a third of a short grace period.
_EXIT_MARGIN_SECONDS = 10.0


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
        self.lease: OutputLease | None = None
        # When the exit first waited for uploads (monotonic), for a failure's grace period.
        self._hold_from: float | None = None
        self.stage: Stage = "preparing"
        self.memory_plan: MemoryPlan | None = None
        self.tracking: RunTracking | None = None
        self.eval_tracker: EvalTracker | None = None

    # --- every exit becomes a message --------------------------------------------------------
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
        if message.reason == TrainerReason.DIVERGED and self.progress.checkpoint is not None:
            step = self.progress.checkpoint.step
            update["message"] = (
                f"{message.message} (checkpoint-{step}, from before the divergence, is kept)"
            )
        lost = self.target.lost_output() if self.target is not None else None
        if lost is not None:
            update["message"] = f"{update.get('message', message.message)}; lost: {lost}"
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
                        log.error("lost: %s", self.target.lost_output())
                if self.tracking is not None:
                    self.tracking.close("KILLED" if self.progress.interrupted else "FAILED")
                if self.lease is not None:
                    self.lease.release()
                self.metrics.stop()
            finally:
                self.stop.uninstall()

    def _upload_deadline(self) -> float:
        """Until when (monotonic) the exit may wait for failed uploads: the pod's grace
        period from the stop signal, or from the first wait (after a failure the pod may
        be stopped at any moment), less a margin for the exit itself."""
        now = time.monotonic()
        if self._hold_from is None:
            self._hold_from = now
        start = self._hold_from
        if self.stop.received_at is not None:
            start = min(start, self.stop.received_at)
        grace = self.runtime.grace_period_seconds
        return start + grace - min(_EXIT_MARGIN_SECONDS, grace / 3)

    # --- the stages, in order ----------------------------------------------------------------
    def _train(self) -> TerminationMessage:
        self.target = target = self._open_output()
        finished = report_finished(
            target, self.config, self.fingerprint, self.accepted_fingerprints, self.progress
        )
        if finished is not None:
            return finished
        resume = self._find_resume_point(target)
        self.tracking = RunTracking(
            self.config, self.fingerprint, target.artifacts.root, self.progress
        )

        from .backends import select_backend

        backend = select_backend(self.runtime.backend, self.runtime.scratch())
        log.info("backend: %s", backend.description)
        self.metrics.describe(
            model=self.config.model.display_name,
            backend=backend.description,
            version=__version__,
        )
        model_source = resolve_model(self.config.model, self.runtime.scratch())
        inputs = self._prepare_inputs(model_source)

        self.memory_plan = plan = self._plan_memory(backend, model_source, self.runtime.hf_token)
        self.stage = "loading"
        self.metrics.stage(TrainerStage.LOADING)
        model, tokenizer = self._load_model(backend, model_source, plan)

        # Compiling until the first optimizer step ends (callbacks.py): building the
        # trainer, Unsloth's patches, torch.compile and the first step's kernels.
        self.metrics.stage(TrainerStage.COMPILING)
        self.stage = "training"
        trainer = self._build_trainer(backend, plan, model, tokenizer, inputs, target)
        self._run_trainer(trainer, resume)
        if self.progress.interrupted:
            return self._interrupted(target)

        self.stage = "finishing"
        self.metrics.stage(TrainerStage.SAVING)
        with self.stop.during("finishing"):
            write_final_outputs(
                self.config,
                self.fingerprint,
                backend,
                trainer,
                model,
                tokenizer,
                target,
                self.metrics_log,
                self.progress,
            )
        self.tracking.finish(target.artifacts.root / FINAL_MODEL_DIR)
        report = self.progress.report
        if self.eval_tracker is not None:
            report.early_stop = self.eval_tracker.stop_reason()
        text = f"trained {report.step} steps; adapter at {report.adapter_uri}"
        return self.progress.message(
            "succeeded", TrainerReason.COMPLETED, outcome_text(text, report)
        )

    def _open_output(self) -> OutputTarget:
        target = make_target(self.config, self.runtime.scratch())
        log.info("output: %s (config fingerprint %s)", target.describe(), self.fingerprint)
        target.check_access()
        # The lease before anything else: preparing clears half-written leftovers, which
        # in an output another trainer is writing are that trainer's work in progress.
        lease = OutputLease(
            target.lease_store(), output_uri=target.uri_base, fingerprint=self.fingerprint
        )
        with output_access(f"output {target.uri_base}"):
            lease.acquire()
        self.lease = target.lease = lease
        lease.start_renewing()
        target.hold_uploads = self._upload_deadline
        target.prepare()
        check_output_fingerprints(target, self.fingerprint, self.accepted_fingerprints)
        return target

    def _find_resume_point(self, target: OutputTarget) -> ResumePoint | None:
        """The checkpoint to go on from (resume.py), reported and its step records
        restored; None for a fresh start."""
        resume = find_resume_point(target, self.fingerprint, self.accepted_fingerprints)
        if resume is not None:
            self.progress.report.resumed_from_step = resume.step
            self.progress.checkpoint = CheckpointRef(step=resume.step, uri=resume.uri)
            self.metrics.update(resumed_from_step=resume.step, checkpoint_step=resume.step)
            self.metrics_log.restore(resume.path / METRICS_FILE, resume.step)
        return resume

    def _prepare_inputs(self, model_source: ModelSource) -> TrainingInputs:
        """Tokenizer, prepared rows and the step count (input_pipeline.py): the step plan's
        total is the run's, reported from here on."""
        inputs = prepare_inputs(
            self.config, model_source, self.runtime.scratch(), self.runtime.hf_token
        )
        self.progress.report.total_steps = inputs.steps.total_steps
        self.metrics.update(total_steps=inputs.steps.total_steps)
        self.progress.report.provenance = run_provenance(self.config, model_source, inputs)
        return inputs

    def _plan_memory(
        self, backend: Backend, model_source: ModelSource, token: str | None
    ) -> MemoryPlan:
        """The micro-batch, gradient checkpointing and embedding placement for this GPU
        (memory_plan.py), from the model's config.json before its weights load."""
        return plan_for_backend(
            self.config, backend, model_source, token, self.runtime.gpu_memory_fraction
        )

    def _load_model(
        self, backend: Backend, model_source: ModelSource, plan: MemoryPlan
    ) -> tuple[Any, Any]:
        started = time.monotonic()
        token = self.runtime.hf_token
        with model_errors(self.config.model, model_source, stage="model", token=token):
            model, tokenizer = backend.load(self.config, model_source, token, plan)
        log.info("model loaded in %.1fs", time.monotonic() - started)
        log_gpu_memory_after_load()
        return model, tokenizer

    def _build_trainer(
        self,
        backend: Backend,
        plan: MemoryPlan,
        model: Any,
        tokenizer: Any,
        inputs: TrainingInputs,
        target: OutputTarget,
    ) -> Any:
        from .sft_trainer import build_sft_trainer

        eval_data = inputs.eval_data
        if eval_data is not None:
            self.eval_tracker = EvalTracker(
                self.config,
                progress=self.progress,
                metrics=self.metrics,
                metrics_log=self.metrics_log,
            )
        return build_sft_trainer(
            self.config,
            backend,
            plan,
            model,
            tokenizer,
            inputs.data.dataset,
            target,
            eval_dataset=eval_data.dataset if eval_data is not None else None,
            eval_tracker=self.eval_tracker,
            fingerprint=self.fingerprint,
            progress=self.progress,
            metrics=self.metrics,
            metrics_log=self.metrics_log,
            stop=self.stop,
            tracking=self.tracking,
        )

    def _run_trainer(self, trainer: Any, resume: ResumePoint | None) -> None:
        with self.stop.during("training"):
            trainer.train(resume_from_checkpoint=str(resume.path) if resume else None)
        self.progress.report.step = int(trainer.state.global_step)

    def _interrupted(self, target: OutputTarget) -> TerminationMessage:
        """Training stopped early on a stop signal: the checkpoint it asked for is made
        durable, and the message says where the next attempt goes on from."""
        with self.stop.during("finishing"):
            target.flush()
        checkpoint = self.progress.checkpoint
        where = f"checkpoint-{checkpoint.step} at {checkpoint.uri}" if checkpoint else "none"
        return self.progress.message(
            "interrupted",
            TrainerReason.INTERRUPTED,
            f"stopped by {self.stop.signal_name} after step {self.progress.report.step}; "
            f"checkpoint: {where}",
        )


def main(config: TrainerConfig, runtime: RuntimeOptions) -> TerminationMessage:
    """Train as configured; always returns the termination message (never raises for a
    training failure: the message says what happened, the CLI maps it to the exit code)."""
    return TrainingRun(config, runtime).execute()
