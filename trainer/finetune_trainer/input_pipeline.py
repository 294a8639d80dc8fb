"""The training inputs, prepared the same way for the run and for ``--dry-run``: the
model's tokenizer, the dataset's rows rendered, tokenized and masked (``data/``), and the
optimizer steps those rows make in batches (``step_plan.py``). Bad data fails here, before
any model weight loads."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune_api.config import TrainerConfig

from .sources import ModelSource, resolve_dataset
from .step_plan import StepPlan, plan_steps

if TYPE_CHECKING:
    import datasets

    from .data import PreparedDataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingInputs:
    # No tokenizer: the run trains with the one its backend loads with the model (Unsloth
    # patches its own); this one only prepares the rows.
    data: PreparedDataset
    steps: StepPlan
    # sha256:<hex> of the rows' token ids and masks in order (provenance.rows_digest).
    rows_digest: str
    # dataset.eval's rows, prepared like the training rows; None without dataset.eval.
    eval_data: PreparedDataset | None = None


def prepare_inputs(
    config: TrainerConfig, model: ModelSource, scratch: Path, token: str | None
) -> TrainingInputs:
    """Load ``model``'s tokenizer and the configured rows (Hub datasets cached under
    ``scratch``), prepare the rows for training and count the steps they make. Raises
    InvalidInput (InvalidModel, InvalidDataset) naming what to fix."""
    from .data import load_rows, prepare_dataset
    from .model_errors import load_tokenizer
    from .provenance import rows_digest

    tokenizer = load_tokenizer(config.model, model, token)
    rows = load_rows(
        config.dataset,
        resolve_dataset(config.dataset, scratch),
        token=token,
        cache_dir=scratch / "datasets-cache",
    )
    eval_rows = None
    if config.dataset.eval is not None:
        rows, eval_rows = _eval_rows(config, rows, scratch, token)
    prepared = prepare_dataset(rows, tokenizer, config)
    digest = rows_digest(prepared.dataset)
    log.info("data: %s (%s)", prepared.stats.to_dict(), digest)
    eval_data = None
    if eval_rows is not None:
        eval_data = _prepare_eval(eval_rows, tokenizer, config)
        log.info("eval data: %s", eval_data.stats.to_dict())
    steps = plan_steps(len(prepared.dataset), config.training)
    log.info(
        "plan: %d optimizer steps (%.2f epochs) of %d rows each",
        steps.total_steps,
        steps.epochs,
        steps.effective_batch,
    )
    return TrainingInputs(data=prepared, steps=steps, rows_digest=digest, eval_data=eval_data)


def _eval_rows(
    config: TrainerConfig, rows: datasets.Dataset, scratch: Path, token: str | None
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(training rows, eval rows) for ``config.dataset.eval`` (data/eval_split.py)."""
    from .data.eval_split import eval_source, hold_out, load_eval_rows

    spec = config.dataset.eval
    assert spec is not None
    if spec.fraction is not None:
        return hold_out(rows, spec, config.training.seed)
    source = eval_source(config.dataset)
    local = resolve_dataset(source, scratch, "eval")
    evaluated = load_eval_rows(
        config.dataset, local, token=token, cache_dir=scratch / "datasets-cache"
    )
    return rows, evaluated


def _prepare_eval(rows: datasets.Dataset, tokenizer: Any, config: TrainerConfig) -> PreparedDataset:
    from .data import prepare_dataset
    from .errors import InvalidDataset

    try:
        return prepare_dataset(rows, tokenizer, config)
    except InvalidDataset as exc:
        raise InvalidDataset(f"dataset.eval: {exc}") from None
