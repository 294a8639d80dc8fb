"""Render, tokenize and mask the training rows, applying the invalid-row and overlong-row
policies, and count what happened."""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from finetune_api.config import TrainerConfig

from ..errors import InvalidDataset, InvalidModel
from .encode import Encoded, encode_escaped, refusal, special_token_in_text
from .harmony import HarmonyIds
from .masks import TrainOn, check_untrained, loss_spans, token_mask
from .render import ChatRenderer, RenderedChat, special_token_problem
from .rows import RowProblem, clean_messages, clean_text
from .special_tokens import SpecialTokens
from .stats import DataStats, PreparedDataset

if TYPE_CHECKING:
    import datasets

log = logging.getLogger(__name__)

# Row outcomes, kept in a helper column while the rows are processed.
OK, TRUNCATED, INVALID, OVERLONG = "ok", "truncated", "invalid", "overlong"
_KEPT = (OK, TRUNCATED)
# How many skipped rows are logged one by one before only the count is kept.
_LOGGED_PER_KIND = 10
_BATCH_SIZE = 256


@dataclass(frozen=True)
class _Settings:
    fmt: str
    column: str
    train_on: TrainOn
    reasoning_effort: str
    max_seq_length: int
    overlong_policy: str
    invalid_row_policy: str
    escape_special_tokens: bool

    @classmethod
    def from_config(cls, config: TrainerConfig) -> _Settings:
        data = config.dataset
        return cls(
            fmt=data.format,
            column=data.messages_column if data.format == "sharegpt" else data.text_column,
            train_on=config.training.train_on,
            reasoning_effort=config.training.reasoning_effort,
            max_seq_length=config.model.max_seq_length,
            overlong_policy=data.overlong_policy,
            invalid_row_policy=data.invalid_row_policy,
            escape_special_tokens=data.special_tokens_in_content == "escape",
        )


def _row_error(index: int, problem: str) -> InvalidDataset:
    return InvalidDataset(
        f"dataset row {index} (0-based, after split and maxSamples): {problem}. To drop such "
        "rows instead, set dataset.invalidRowPolicy: skip"
    )


def _nothing_to_learn(settings: _Settings) -> str:
    if settings.train_on == "final":
        return (
            "no token would carry loss: the row has no assistant final answer; add an "
            "assistant message with content, or set training.trainOn to all"
        )
    if settings.fmt == "custom":
        return (
            "no token would carry loss: no assistant turn was found in the text (harmony "
            "<|start|>assistant messages); set training.trainOn: all to train on every token "
            "of ready-made text"
        )
    return (
        "no token would carry loss: the row has no assistant message; add one, or set "
        "training.trainOn: all"
    )


def _closing_markers(tokenizer: Any) -> list[str]:
    """Special tokens that may close an assistant message in a non-harmony template: every
    special token but padding and the beginning-of-text token (which opens, not closes).
    The end-of-text token always closes, also when a tokenizer reuses it as padding or as
    its beginning-of-text token: the model must learn to stop."""
    special = {str(t) for t in getattr(tokenizer, "all_special_tokens", [])}
    special |= {
        str(t) for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if t.special
    }
    special -= {str(tokenizer.pad_token), str(tokenizer.bos_token)} - {str(tokenizer.eos_token)}
    return sorted(special)


class _RowProcessor:
    """Turns batches of raw rows into tokenized, masked rows plus an outcome per row."""

    def __init__(self, tokenizer: Any, settings: _Settings) -> None:
        self.tokenizer = tokenizer
        self.settings = settings
        self.closing_markers = _closing_markers(tokenizer)
        self.special = SpecialTokens.of(tokenizer)
        self.harmony = HarmonyIds.of(tokenizer)
        self.renderer = ChatRenderer(tokenizer, settings.reasoning_effort)

    def _render(self, value: Any) -> RenderedChat:
        s = self.settings
        if s.fmt == "custom":
            # Ready-made text: its special tokens are its structure, by the author's intent.
            return RenderedChat(clean_text(value, s.column))
        messages = clean_messages(value, s.column)
        problem = special_token_problem(messages, self.special, escape=s.escape_special_tokens)
        if problem is not None:
            raise RowProblem(problem)
        return self.renderer.render(messages)

    def _mask(self, chat: RenderedChat, encoded: Encoded) -> tuple[Encoded, list[int]]:
        """The row's tokens (escaped where its text made a special token) and loss mask.
        Raises RowProblem."""
        s = self.settings
        clash = special_token_in_text(chat, encoded, self.special)
        if clash is not None:
            if not s.escape_special_tokens:
                raise refusal(*clash)
            encoded = encode_escaped(self.tokenizer, chat, self.special)
        spans = loss_spans(
            chat,
            encoded.input_ids,
            encoded.offsets,
            s.train_on,
            harmony=self.harmony,
            closing_markers=self.closing_markers,
        )
        mask = token_mask(encoded.offsets, spans)
        if s.train_on != "all":
            check_untrained(chat, encoded.offsets, mask)
        return encoded, mask

    def _fail(self, index: int, problem: str) -> dict[str, Any]:
        if self.settings.invalid_row_policy == "error":
            raise _row_error(index, problem)
        return _outcome(INVALID, problem)

    def _finish(self, index: int, input_ids: list[int], mask: list[int]) -> dict[str, Any]:
        s = self.settings
        length = len(input_ids)
        kind = OK
        if length > s.max_seq_length:
            if s.overlong_policy == "error":
                raise InvalidDataset(
                    f"dataset row {index} (0-based, after split and maxSamples) is {length} "
                    f"tokens long, more than model.maxSeqLength ({s.max_seq_length}); raise "
                    "model.maxSeqLength, shorten or remove the row, or set "
                    "dataset.overlongPolicy to skip or truncate"
                )
            if s.overlong_policy == "skip":
                return _outcome(
                    OVERLONG,
                    f"{length} tokens, more than model.maxSeqLength ({s.max_seq_length})",
                )
            input_ids, mask, kind = (
                input_ids[: s.max_seq_length],
                mask[: s.max_seq_length],
                TRUNCATED,
            )
        if not any(mask):
            problem = _nothing_to_learn(s)
            if kind == TRUNCATED:
                problem = (
                    f"after truncation to model.maxSeqLength ({s.max_seq_length}) tokens no "
                    f"token carries loss (the row is {length} tokens and its trained part "
                    "starts later); raise model.maxSeqLength or shorten the row"
                )
            return self._fail(index, problem)
        return _outcome(kind, "", input_ids, mask)

    def __call__(self, batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        s = self.settings
        out: dict[str, list[Any]] = {name: [] for name in _COLUMNS}
        rendered: list[tuple[int, int, RenderedChat]] = []
        results: list[dict[str, Any] | None] = []
        for position, (index, value) in enumerate(zip(indices, batch[s.column], strict=True)):
            try:
                chat = self._render(value)
            except RowProblem as problem:
                results.append(self._fail(index, str(problem)))
                continue
            rendered.append((position, index, chat))
            results.append(None)
        if rendered:
            encoded = self.tokenizer(
                [chat.text for _, _, chat in rendered],
                add_special_tokens=False,  # the template (or the ready-made text) has them
                return_offsets_mapping=True,
            )
            for k, (position, index, chat) in enumerate(rendered):
                whole = Encoded(list(encoded["input_ids"][k]), list(encoded["offset_mapping"][k]))
                try:
                    tokens, mask = self._mask(chat, whole)
                except RowProblem as problem:
                    results[position] = self._fail(index, str(problem))
                    continue
                results[position] = self._finish(index, tokens.input_ids, mask)
        for result in results:
            assert result is not None
            for name in _COLUMNS:
                out[name].append(result[name])
        return out


_COLUMNS = ("input_ids", "completion_mask", "length", "_loss", "_kind", "_problem")


def _outcome(
    kind: str, problem: str, input_ids: list[int] | None = None, mask: list[int] | None = None
) -> dict[str, Any]:
    ids = input_ids or []
    bits = mask or []
    return {
        "input_ids": ids,
        "completion_mask": bits,
        "length": len(ids),
        "_loss": sum(bits),
        "_kind": kind,
        "_problem": problem,
    }


def _check_inputs(rows: datasets.Dataset, tokenizer: Any, settings: _Settings) -> None:
    if settings.column not in rows.column_names:
        option = "dataset.messagesColumn" if settings.fmt == "sharegpt" else "dataset.textColumn"
        raise InvalidDataset(
            f"the dataset has no column {settings.column!r} (its columns: "
            f"{', '.join(rows.column_names) or 'none'}); set {option} to the column that holds "
            f"the {'chat messages' if settings.fmt == 'sharegpt' else 'training text'}"
        )
    if not getattr(tokenizer, "is_fast", False):
        raise InvalidModel(
            "the model's tokenizer is not a fast (Rust) tokenizer, which loss masking needs "
            "for its offset mapping; give a model directory with a tokenizer.json"
        )
    if settings.fmt == "sharegpt" and not getattr(tokenizer, "chat_template", None):
        raise InvalidDataset(
            "format sharegpt renders chats through the model's chat template, but the "
            "model's tokenizer has none; use a model with a chat template, or give "
            "ready-made text with dataset.format: custom"
        )


def _fingerprint(rows: datasets.Dataset, tokenizer: Any, settings: _Settings) -> str:
    """A cache name for the processed rows that changes with everything that shapes them."""
    digest = hashlib.sha256()
    for part in (
        getattr(rows, "_fingerprint", ""),
        repr(settings),
        str(getattr(tokenizer, "name_or_path", "")),
        str(len(tokenizer)),
        str(getattr(tokenizer, "chat_template", "")),
    ):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def _log_skips(kinds: list[str], problems: list[str]) -> None:
    logged: Counter[str] = Counter()
    for index, (kind, problem) in enumerate(zip(kinds, problems, strict=True)):
        if kind in (INVALID, OVERLONG) and logged[kind] < _LOGGED_PER_KIND:
            logged[kind] += 1
            what = "invalid" if kind == INVALID else "overlong"
            log.warning("skipping %s dataset row %d: %s", what, index, problem)


def prepare_dataset(
    rows: datasets.Dataset, tokenizer: Any, config: TrainerConfig
) -> PreparedDataset:
    """Render (sharegpt, through the tokenizer's chat template with the configured
    reasoning effort) or take as is (custom), tokenize, and mask the loss per
    ``config.training.train_on``. Applies ``dataset.invalid_row_policy`` and
    ``dataset.overlong_policy``; raises InvalidDataset naming the row and the fix, or when
    no row is left."""
    settings = _Settings.from_config(config)
    _check_inputs(rows, tokenizer, settings)
    processed = rows.map(
        _RowProcessor(tokenizer, settings),
        batched=True,
        batch_size=_BATCH_SIZE,
        with_indices=True,
        remove_columns=rows.column_names,
        new_fingerprint=_fingerprint(rows, tokenizer, settings),
        load_from_cache_file=False,
        desc="Tokenizing",
    )
    kinds: list[str] = processed["_kind"]
    _log_skips(kinds, processed["_problem"])
    counts = Counter(kinds)
    kept = [i for i, kind in enumerate(kinds) if kind in _KEPT]
    if not kept:
        raise InvalidDataset(
            f"no dataset row is left to train on: {counts[INVALID]} invalid and "
            f"{counts[OVERLONG]} longer than model.maxSeqLength ({settings.max_seq_length}) "
            f"of {len(rows)} were skipped; fix the data, or raise model.maxSeqLength or set "
            "dataset.overlongPolicy: truncate"
        )
    used = processed.select(kept) if len(kept) < len(processed) else processed
    lengths: list[int] = used["length"]
    stats = DataStats(
        rows_in=len(rows),
        rows_used=len(kept),
        skipped_invalid=counts[INVALID],
        skipped_overlong=counts[OVERLONG],
        truncated=counts[TRUNCATED],
        tokens=sum(lengths),
        loss_tokens=sum(used["_loss"]),
        max_length=max(lengths),
        mean_length=sum(lengths) / len(lengths),
    )
    log.info(
        "prepared %d of %d rows (%d invalid and %d overlong skipped, %d truncated): %d tokens, "
        "%d carrying loss",
        stats.rows_used,
        stats.rows_in,
        stats.skipped_invalid,
        stats.skipped_overlong,
        stats.truncated,
        stats.tokens,
        stats.loss_tokens,
    )
    dataset = used.remove_columns(["_loss", "_kind", "_problem"])
    return PreparedDataset(dataset=dataset, stats=stats)
