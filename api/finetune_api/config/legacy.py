"""Accept the original single-machine example's ``config.yaml``.

That file used snake_case keys (accepted everywhere by the base model) and a few names of
its own. They are renamed here, in one place, before validation, so the typed schema keeps a
single spelling for each setting and the CRD never learns the old names.
"""

from __future__ import annotations

from typing import Any

_DATA_SUFFIXES = (".json", ".jsonl", ".parquet", ".csv")

# section -> {old key: new key}
_RENAMES: dict[str, dict[str, str]] = {
    "model": {"model_name": "name"},
    "lora": {"r": "rank", "lora_alpha": "alpha", "lora_dropout": "dropout"},
    "training": {
        "optim": "optimizer",
        "num_train_epochs": "num_epochs",
        "lr_scheduler": "lr_scheduler_type",
    },
    "output": {"dir": "path", "output_dir": "path"},
}


def _looks_like_a_path(value: str) -> bool:
    return value.startswith(("/", "./", "../", "~"))


def _looks_local(value: str) -> bool:
    return _looks_like_a_path(value) or value.lower().endswith(_DATA_SUFFIXES)


def upgrade_legacy_keys(data: Any) -> Any:
    """Return ``data`` with the original example's key names replaced by the schema's."""
    if not isinstance(data, dict):
        return data
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for section, renames in _RENAMES.items():
        body = out.get(section)
        if not isinstance(body, dict):
            continue
        for old, new in renames.items():
            if old in body and new not in body:
                body[new] = body.pop(old)
    # training.max_steps: -1 meant "train by epochs" in the example.
    training = out.get("training")
    if isinstance(training, dict) and training.get("max_steps") == -1:
        del training["max_steps"]
        training.setdefault("num_epochs", 1)
    # model_name was either a Hub id or a local directory; only the first is model.name.
    model = out.get("model")
    if isinstance(model, dict):
        name = model.get("name")
        if isinstance(name, str) and _looks_like_a_path(name) and "path" not in model:
            model["path"] = model.pop("name")
    # dataset.path was either a Hub id or a local file.
    dataset = out.get("dataset")
    if isinstance(dataset, dict):
        path = dataset.get("path")
        if isinstance(path, str) and not _looks_local(path) and "name" not in dataset:
            dataset["name"] = dataset.pop("path")
    return out
