"""The trainer writes only the contract's reasons into its termination message."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from finetune_api.contract import TRAINER_REASONS, TerminationMessage, TrainerReason
from finetune_trainer import errors
from finetune_trainer.termination import write_termination_message

PACKAGE = Path(errors.__file__).resolve().parent


def _reason_literals(tree: ast.AST) -> list[tuple[int, str]]:
    """String constants that the code uses as a reason: ``reason="..."`` arguments,
    ``reason = "..."`` class attributes (the errors'), and the reason argument of
    ``RunProgress.message``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "reason":
            value = node.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                found.append((value.lineno, value.value))
        elif isinstance(node, ast.ClassDef):
            for statement in node.body:
                if not isinstance(statement, ast.Assign | ast.AnnAssign):
                    continue
                targets = (
                    statement.targets if isinstance(statement, ast.Assign) else [statement.target]
                )
                value = statement.value
                if (
                    any(isinstance(t, ast.Name) and t.id == "reason" for t in targets)
                    and isinstance(value, ast.Constant)
                    and isinstance(value.value, str)
                ):
                    found.append((value.lineno, value.value))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "message"
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
        ):
            found.append((node.args[1].lineno, str(node.args[1].value)))
    return found


def test_no_reason_is_spelled_as_a_bare_string() -> None:
    """Reasons are TrainerReason members (mypy checks where they go); a string literal would
    bypass that, so none may appear where a reason is given."""
    literals = [
        f"{path.relative_to(PACKAGE)}:{line}: {value!r}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line, value in _reason_literals(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert literals == []


def test_every_invalid_input_error_carries_a_contract_reason() -> None:
    classes = [errors.InvalidInput]
    while classes:
        cls = classes.pop()
        assert cls.reason in TRAINER_REASONS, cls
        assert isinstance(cls.reason, TrainerReason), cls
        classes.extend(cls.__subclasses__())


def test_a_reason_outside_the_contract_is_never_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "termination-log"
    message = TerminationMessage(status="failed", reason="SomethingNew", message="boom")
    write_termination_message(message, path)
    written = json.loads(path.read_text())
    assert written["reason"] == "TrainingFailed"
    assert written["message"] == "boom"
    assert "'SomethingNew' is not one of the contract's" in caplog.text
