"""Which weights become final_model (``output.keep``): the last step's, or those of the
checkpoint with the lowest eval loss, loaded back from the output (fetched and verified
like a resume) into the model before it is saved and, optionally, merged."""

from __future__ import annotations

import logging
from typing import Any

from finetune_api.config import TrainerConfig
from finetune_api.contract import FinalModelRef
from finetune_api.status import loss_display

from .storage.targets import OutputTarget

log = logging.getLogger(__name__)

ADAPTER_WEIGHTS = "adapter_model.safetensors"


def choose_final_weights(
    config: TrainerConfig, trainer: Any, model: Any, target: OutputTarget
) -> FinalModelRef:
    """Put the weights that final_model must hold into ``model`` and say which they are.
    With keep: best, Trainer's state names the best step (``best_global_step``: it came
    through any resume in trainer_state.json), whose checkpoint every evaluation has
    (evalSteps is a multiple of saveSteps)."""
    state = trainer.state
    step = int(state.global_step)
    best_step = getattr(state, "best_global_step", None)
    best_loss = getattr(state, "best_metric", None)
    if config.output.keep != "best" or not best_step or best_loss is None:
        return FinalModelRef(step=step, selection="last step")
    selection = f"best eval loss {loss_display(float(best_loss))} at step {best_step}"
    if int(best_step) != step:
        _load_checkpoint_adapter(model, target, int(best_step))
    log.info("final_model: %s", selection)
    return FinalModelRef(step=int(best_step), selection=selection)


def _load_checkpoint_adapter(model: Any, target: OutputTarget, step: int) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    # Checkpoints reach an S3 output in the background: the best one may still be on its
    # way (or waiting out an outage), and only what has arrived is listed.
    target.flush()
    candidate = next((c for c in target.resume_candidates() if c.step == step), None)
    if candidate is None:
        # Every checkpoint is kept under keep: best (saveTotalLimit is refused with it), so
        # it was removed from outside the trainer: a retry resumes and looks again.
        raise RuntimeError(
            f"output.keep: best names checkpoint-{step} (the lowest eval loss), which is not "
            f"in {target.uri_base}; was it deleted? Set output.keep: last to keep the last "
            "step's weights instead"
        )
    path, _manifest = candidate.fetch()
    weights = load_file(str(path / ADAPTER_WEIGHTS))
    result = set_peft_model_state_dict(model, weights)
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise RuntimeError(f"checkpoint-{step}'s adapter does not fit the model: {unexpected[:3]}")
    log.info("loaded the adapter of checkpoint-%d (%s) for final_model", step, candidate.uri)
