"""Rendering, tokenizing and loss masking, proven by decoding the tokens that carry loss;
and the invalid-row and overlong-row policies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from finetune_api.config import TrainerConfig
from finetune_trainer.data import load_rows, prepare_dataset
from finetune_trainer.errors import InvalidDataset
from finetune_trainer.fixtures import generate_rows, write_custom_text_dataset
from finetune_trainer.fixtures.harmony_render import render_harmony


def _config(**sections: dict[str, Any]) -> TrainerConfig:
    data = {"dataset": {"path": "/data"}, **sections}
    data["dataset"] = {"path": "/data", **sections.get("dataset", {})}
    return TrainerConfig.from_mapping(data)


def _rows(records: list[dict[str, Any]]) -> Any:
    import datasets

    return datasets.Dataset.from_list(records)


def _trained_text(tokenizer: Any, row: dict[str, Any]) -> str:
    """The text of the tokens that carry loss, i.e. the labels a collator would keep."""
    ids = [t for t, m in zip(row["input_ids"], row["completion_mask"], strict=True) if m]
    return tokenizer.decode(ids, skip_special_tokens=False)


ROW = generate_rows(1, seed=11)[0]


def test_a_row_renders_through_the_chat_template(tiny_tokenizer: Any) -> None:
    prepared = prepare_dataset(
        _rows([ROW]), tiny_tokenizer, _config(training={"reasoningEffort": "high"})
    )
    row = prepared.dataset[0]
    text = tiny_tokenizer.decode(row["input_ids"], skip_special_tokens=False)
    assert text == render_harmony(ROW["messages"], reasoning_effort="high")
    assert "<|start|>developer<|message|># Instructions\n\nreasoning language:" in text
    assert row["length"] == len(row["input_ids"]) == len(row["completion_mask"])
    assert prepared.dataset.column_names == ["input_ids", "completion_mask", "length"]


def test_train_on_assistant_covers_reasoning_answer_and_end_token(tiny_tokenizer: Any) -> None:
    prepared = prepare_dataset(_rows([ROW]), tiny_tokenizer, _config())
    assert _trained_text(tiny_tokenizer, prepared.dataset[0]) == (
        f"<|channel|>analysis<|message|>{ROW['analysis']}<|end|>"
        f"<|start|>assistant<|channel|>final<|message|>{ROW['final']}<|return|>"
    )


def test_train_on_final_covers_only_the_answer_and_its_end_token(tiny_tokenizer: Any) -> None:
    prepared = prepare_dataset(_rows([ROW]), tiny_tokenizer, _config(training={"trainOn": "final"}))
    assert _trained_text(tiny_tokenizer, prepared.dataset[0]) == ROW["final"] + "<|return|>"


def test_train_on_all_covers_every_token(tiny_tokenizer: Any) -> None:
    prepared = prepare_dataset(_rows([ROW]), tiny_tokenizer, _config(training={"trainOn": "all"}))
    row = prepared.dataset[0]
    assert all(row["completion_mask"])
    assert _trained_text(tiny_tokenizer, row) == render_harmony(ROW["messages"])


def test_multi_turn_trains_every_assistant_turn(tiny_tokenizer: Any) -> None:
    chat = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!", "thinking": "greet back"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Goodbye!", "thinking": "say bye"},
    ]
    assistant = prepare_dataset(_rows([{"messages": chat}]), tiny_tokenizer, _config())
    # The earlier turn is rendered as history (its reasoning dropped) and trained as such.
    assert _trained_text(tiny_tokenizer, assistant.dataset[0]) == (
        "<|channel|>final<|message|>Hello!<|end|>"
        "<|channel|>analysis<|message|>say bye<|end|>"
        "<|start|>assistant<|channel|>final<|message|>Goodbye!<|return|>"
    )
    final = prepare_dataset(
        _rows([{"messages": chat}]), tiny_tokenizer, _config(training={"trainOn": "final"})
    )
    assert _trained_text(tiny_tokenizer, final.dataset[0]) == "Hello!<|end|>Goodbye!<|return|>"


def test_non_harmony_templates_fall_back_to_locating_answers(tiny_tokenizer: Any) -> None:
    import copy

    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '<|endoftext|>' }}{% endfor %}"
    )
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"}]
    prepared = prepare_dataset(
        _rows([{"messages": chat}]), tokenizer, _config(training={"trainOn": "final"})
    )
    # The answer's first token carries the space before it (byte-level BPE): it is trained,
    # since it holds the answer's first word.
    assert _trained_text(tokenizer, prepared.dataset[0]) == " Hello there<|endoftext|>"


def test_custom_text_is_used_as_is_and_masked_like_rendered_chats(
    tmp_path: Path, tiny_tokenizer: Any
) -> None:
    path = write_custom_text_dataset(tmp_path / "custom.jsonl", rows=6, seed=2)
    custom = prepare_dataset(
        load_rows(_config().dataset, path, cache_dir=tmp_path / "c"),
        tiny_tokenizer,
        _config(dataset={"format": "custom"}),
    )
    chats = prepare_dataset(_rows(generate_rows(6, seed=2)), tiny_tokenizer, _config())
    assert custom.dataset["input_ids"] == chats.dataset["input_ids"]
    assert custom.dataset["completion_mask"] == chats.dataset["completion_mask"]


def test_custom_plain_text_needs_train_on_all(tiny_tokenizer: Any) -> None:
    rows = _rows([{"text": "Just some text."}])
    with pytest.raises(InvalidDataset) as caught:
        prepare_dataset(rows, tiny_tokenizer, _config(dataset={"format": "custom"}))
    assert "dataset row 0" in str(caught.value)
    assert "set training.trainOn: all" in str(caught.value)
    prepared = prepare_dataset(
        rows, tiny_tokenizer, _config(dataset={"format": "custom"}, training={"trainOn": "all"})
    )
    assert _trained_text(tiny_tokenizer, prepared.dataset[0]) == "Just some text."


# --- Rows longer than the context ----------------------------------------------------------


@pytest.fixture(scope="module")
def lengths_and_rows(tiny_tokenizer: Any) -> tuple[list[int], list[dict[str, Any]]]:
    rows = generate_rows(64, seed=0)
    lengths = [
        len(tiny_tokenizer.encode(render_harmony(r["messages"]), add_special_tokens=False))
        for r in rows
    ]
    return lengths, rows


def test_overlong_rows_are_skipped_and_counted(
    tiny_tokenizer: Any, lengths_and_rows: tuple[list[int], list[dict[str, Any]]]
) -> None:
    lengths, rows = lengths_and_rows
    over = sum(length > 256 for length in lengths)
    assert over > 0
    prepared = prepare_dataset(_rows(rows), tiny_tokenizer, _config(model={"maxSeqLength": 256}))
    stats = prepared.stats
    assert (stats.rows_in, stats.skipped_overlong, stats.rows_used) == (64, over, 64 - over)
    assert max(prepared.dataset["length"]) <= 256
    assert stats.tokens == sum(length for length in lengths if length <= 256)


def test_overlong_rows_are_truncated(
    tiny_tokenizer: Any, lengths_and_rows: tuple[list[int], list[dict[str, Any]]]
) -> None:
    lengths, rows = lengths_and_rows
    prepared = prepare_dataset(
        _rows(rows),
        tiny_tokenizer,
        _config(model={"maxSeqLength": 256}, dataset={"overlongPolicy": "truncate"}),
    )
    assert prepared.stats.truncated == sum(length > 256 for length in lengths)
    assert prepared.stats.rows_used == 64
    assert prepared.dataset["length"] == [min(length, 256) for length in lengths]


def test_overlong_row_error_names_the_row_its_length_and_the_fix(
    tiny_tokenizer: Any, lengths_and_rows: tuple[list[int], list[dict[str, Any]]]
) -> None:
    lengths, rows = lengths_and_rows
    first = next(i for i, length in enumerate(lengths) if length > 256)
    with pytest.raises(InvalidDataset) as caught:
        prepare_dataset(
            _rows(rows),
            tiny_tokenizer,
            _config(model={"maxSeqLength": 256}, dataset={"overlongPolicy": "error"}),
        )
    message = str(caught.value)
    assert f"dataset row {first} " in message
    assert f"is {lengths[first]} tokens long, more than model.maxSeqLength (256)" in message
    assert "set dataset.overlongPolicy to skip or truncate" in message


def test_truncation_that_leaves_nothing_to_learn_is_an_invalid_row(tiny_tokenizer: Any) -> None:
    config = _config(model={"maxSeqLength": 16}, dataset={"overlongPolicy": "truncate"})
    with pytest.raises(InvalidDataset) as caught:
        prepare_dataset(_rows([ROW]), tiny_tokenizer, config)
    assert "dataset row 0" in str(caught.value)
    assert "after truncation to model.maxSeqLength (16) tokens no token carries loss" in str(
        caught.value
    )


# --- Invalid rows --------------------------------------------------------------------------

BAD_ROWS = [
    ({"role": "robot", "content": "beep"}, "message 1 has the unknown role 'robot'"),
    ({"role": "user", "content": ""}, "message 1 (user) has empty content"),
]


def _chat_with(message: dict[str, Any]) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "q"}, message]}


GOOD = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}


@pytest.mark.parametrize(("message", "problem"), BAD_ROWS)
def test_invalid_row_error_names_the_row_problem_and_fix(
    tiny_tokenizer: Any, message: dict[str, Any], problem: str
) -> None:
    with pytest.raises(InvalidDataset) as caught:
        prepare_dataset(_rows([GOOD, GOOD, _chat_with(message)]), tiny_tokenizer, _config())
    text = str(caught.value)
    assert text.startswith("dataset row 2 (0-based, after split and maxSamples): ")
    assert problem in text
    assert "set dataset.invalidRowPolicy: skip" in text


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({"messages": []}, "empty conversation; give at least a user and an assistant message"),
        ({"messages": None}, "column 'messages' is null"),
        (
            {"messages": [{"role": "user", "content": "q"}]},
            "the row has no assistant message; add one, or set training.trainOn: all",
        ),
    ],
)
def test_more_invalid_rows(tiny_tokenizer: Any, record: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidDataset) as caught:
        prepare_dataset(_rows([GOOD, record]), tiny_tokenizer, _config())
    assert "dataset row 1 " in str(caught.value)
    assert problem in str(caught.value)


def test_invalid_rows_are_skipped_and_counted(
    tiny_tokenizer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    records = [GOOD, _chat_with(BAD_ROWS[0][0]), GOOD, {"messages": []}, GOOD]
    with caplog.at_level("WARNING"):
        prepared = prepare_dataset(
            _rows(records), tiny_tokenizer, _config(dataset={"invalidRowPolicy": "skip"})
        )
    assert (prepared.stats.skipped_invalid, prepared.stats.rows_used) == (2, 3)
    assert "skipping invalid dataset row 1: message 1 has the unknown role 'robot'" in caplog.text
    assert "skipping invalid dataset row 3: " in caplog.text


def test_missing_column_names_the_columns_and_the_option(tiny_tokenizer: Any) -> None:
    with pytest.raises(InvalidDataset) as caught:
        prepare_dataset(_rows([{"conversation": "x"}]), tiny_tokenizer, _config())
    assert "has no column 'messages' (its columns: conversation)" in str(caught.value)
    assert "set dataset.messagesColumn" in str(caught.value)


def test_a_dataset_with_nothing_left_is_an_error(tiny_tokenizer: Any) -> None:
    with pytest.raises(InvalidDataset) as caught:
        prepare_dataset(
            _rows([{"messages": []}]), tiny_tokenizer, _config(dataset={"invalidRowPolicy": "skip"})
        )
    assert "no dataset row is left to train on: 1 invalid" in str(caught.value)


def test_stats_add_up(tiny_tokenizer: Any) -> None:
    prepared = prepare_dataset(_rows(generate_rows(10, seed=3)), tiny_tokenizer, _config())
    stats = prepared.stats
    lengths = prepared.dataset["length"]
    assert stats.rows_in == stats.rows_used == 10
    assert stats.tokens == sum(lengths)
    assert stats.loss_tokens == sum(sum(m) for m in prepared.dataset["completion_mask"])
    assert 0 < stats.loss_tokens < stats.tokens
    assert stats.max_length == max(lengths)
    assert stats.mean_length == pytest.approx(sum(lengths) / 10)
    assert stats.to_dict()["rows_used"] == 10


def test_non_string_content_in_a_file_is_an_invalid_row(
    tmp_path: Path, tiny_tokenizer: Any
) -> None:
    import json

    path = tmp_path / "d.jsonl"
    bad = {"messages": [{"role": "user", "content": 42}, {"role": "assistant", "content": "a"}]}
    path.write_text("\n".join(json.dumps(r) for r in (GOOD, bad, GOOD)) + "\n")
    rows = load_rows(_config().dataset, path, cache_dir=tmp_path / "c")
    with pytest.raises(InvalidDataset) as caught:
        prepare_dataset(rows, tiny_tokenizer, _config())
    assert "dataset row 1 " in str(caught.value)
    assert "message 0 (user) has content of type int; content must be a string" in str(caught.value)
    skipped = prepare_dataset(rows, tiny_tokenizer, _config(dataset={"invalidRowPolicy": "skip"}))
    assert (skipped.stats.rows_used, skipped.stats.skipped_invalid) == (2, 1)


def test_a_template_error_is_an_invalid_row(tiny_tokenizer: Any) -> None:
    import copy

    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('system messages are not supported') }}{% endif %}"
        "{{ m['content'] + '<|endoftext|>' }}{% endfor %}"
    )
    chat = {"messages": [{"role": "system", "content": "s"}, *GOOD["messages"]]}
    with pytest.raises(InvalidDataset) as caught:
        prepare_dataset(_rows([GOOD, chat]), tokenizer, _config())
    assert "dataset row 1 " in str(caught.value)
    assert "the model's chat template rejected the messages" in str(caught.value)
    assert "system messages are not supported" in str(caught.value)


def test_the_end_token_is_trained_when_it_doubles_as_padding(tiny_tokenizer: Any) -> None:
    """Many tokenizers (Llama-2, Mistral) pad with their end-of-text token; it still closes
    the assistant's answer, and the model must learn to emit it."""
    import copy

    tokenizer = copy.deepcopy(tiny_tokenizer)
    eos = tokenizer.eos_token
    tokenizer.pad_token = eos
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '" + eos + "' }}{% endfor %}"
    )
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"}]
    prepared = prepare_dataset(
        _rows([{"messages": chat}]), tokenizer, _config(training={"trainOn": "final"})
    )
    assert _trained_text(tokenizer, prepared.dataset[0]) == " Hello there" + eos
