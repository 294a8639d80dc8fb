"""The evaluation rows (``dataset.eval``): another split of the training source, a separate
source, or a fraction of the training rows held out with a fixed seed. Only the raw rows
are chosen here; they are rendered, masked and truncated as the training rows are
(prepare.py), so eval loss measures the same task."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from finetune_api.config import DatasetSpec, EvalDataSpec

from ..errors import InvalidDataset
from .loading import load_rows

if TYPE_CHECKING:
    import datasets

log = logging.getLogger(__name__)


def eval_source(data: DatasetSpec) -> DatasetSpec:
    """The dataset spec that loads the eval rows of a split or separate-source
    ``data.eval``: the training spec's format and row policies, with eval's source and
    split (a separate source's split defaults to train)."""
    spec = data.eval
    assert spec is not None and spec.fraction is None
    update: dict[str, object] = {"max_samples": spec.max_samples, "eval": None}
    if spec.separate_source:
        update.update(
            name=spec.name,
            config_name=spec.config_name,
            revision=spec.revision,
            path=spec.path,
            pvc=spec.pvc,
            s3=spec.s3,
            config_map=spec.config_map,
            split=spec.split or "train",
        )
    else:
        update["split"] = spec.split
    return data.model_copy(update=update)


def hold_out(
    rows: datasets.Dataset, spec: EvalDataSpec, default_seed: int
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(training rows, eval rows): ``spec.fraction`` of ``rows`` drawn with the seed (the
    same rows on every attempt), never trained on. Raises InvalidDataset when either side
    would be empty."""
    assert spec.fraction is not None
    seed = spec.seed if spec.seed is not None else default_seed
    held = round(len(rows) * spec.fraction)
    if held < 1 or held >= len(rows):
        raise InvalidDataset(
            f"dataset.eval.fraction {spec.fraction} of {len(rows)} training rows holds out "
            f"{held}; it must leave at least one row on each side: raise the fraction, give "
            "more rows (dataset.maxSamples), or name an eval split or source instead"
        )
    parts = rows.train_test_split(test_size=held, seed=seed, shuffle=True)
    evaluated = parts["test"]
    if spec.max_samples is not None and spec.max_samples < len(evaluated):
        evaluated = evaluated.select(range(spec.max_samples))
    log.info(
        "held out %d of %d rows for evaluation (seed %d); training on %d",
        len(parts["test"]),
        len(rows),
        seed,
        len(parts["train"]),
    )
    return parts["train"], evaluated


def load_eval_rows(
    data: DatasetSpec,
    local_path: Path | None,
    *,
    token: str | None,
    cache_dir: Path | None,
) -> datasets.Dataset:
    """The rows of a split or separate-source ``data.eval`` (``local_path``: where its
    source resolved to, None for the Hub). Errors name dataset.eval."""
    try:
        return load_rows(eval_source(data), local_path, token=token, cache_dir=cache_dir)
    except InvalidDataset as exc:
        raise InvalidDataset(f"dataset.eval: {exc}") from None
