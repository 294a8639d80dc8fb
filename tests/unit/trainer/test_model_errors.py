"""A model that cannot load because of what the config points at is an InvalidModel (exit
78, naming the field and the fix); a load that may work next time stays retryable."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from finetune_api.config import ModelSpec
from finetune_trainer.errors import InvalidConfig, InvalidModel
from finetune_trainer.model_errors import invalid_model, load_tokenizer, model_errors
from finetune_trainer.remote_errors import RemoteFailure
from finetune_trainer.sources import ModelSource, resolve_model

HUB_SPEC = ModelSpec(name="acme/no-such-model", revision="v9")
HUB_SOURCE = ModelSource("acme/no-such-model", "v9", False, "Hub model acme/no-such-model")


def hub_error(kind: type[Exception], status: int) -> Exception:
    request = httpx.Request("GET", "https://huggingface.co/acme/no-such-model")
    return kind("hub says no", response=httpx.Response(status, request=request))  # type: ignore[call-arg]


def wrapped(cause: BaseException, text: str) -> OSError:
    """An OSError raised from ``cause``, as transformers wraps the Hub's errors."""
    try:
        raise OSError(text) from cause
    except OSError as exc:
        return exc


def broken_copy(tiny_model_dir: Path, tmp_path: Path, case: str) -> Path:
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    if case == "config_not_json":
        (model / "config.json").write_text("{")
    elif case == "unknown_model_type":
        config = json.loads((model / "config.json").read_text())
        config["model_type"] = "no_such_architecture"
        (model / "config.json").write_text(json.dumps(config))
    else:
        (model / "tokenizer.json").write_text("{")
    return model


@pytest.mark.parametrize(
    "error, expected",
    [
        (
            wrapped(hub_error(RepositoryNotFoundError, 404), "not a valid model identifier"),
            "model.name acme/no-such-model: no such model on the Hugging Face Hub",
        ),
        (
            wrapped(hub_error(GatedRepoError, 403), "You are trying to access a gated repo."),
            "is a gated repository: accept its terms at https://huggingface.co/acme/no-such-model",
        ),
        (
            wrapped(hub_error(RevisionNotFoundError, 404), "v9 is not a valid git identifier"),
            "model.revision v9 does not exist in model.name acme/no-such-model",
        ),
    ],
)
def test_hub_errors_are_invalid_model_naming_the_field(error: Exception, expected: str) -> None:
    invalid = invalid_model(error, HUB_SPEC, HUB_SOURCE, stage="tokenizer")
    assert isinstance(invalid, InvalidModel)
    assert expected in invalid.message
    assert "model.tokenSecretRef" in invalid.message or "revision" in invalid.message


UNREACHABLE = (
    "model.name acme/no-such-model: could not get an answer from https://huggingface.co "
    "(unreachable, refused or not the Hugging Face Hub); check that the pod may reach it, or "
    "put the model on a PVC or S3 (model.pvc, model.s3)"
)


@pytest.mark.parametrize(
    "error, expected",
    [
        (
            wrapped(
                LocalEntryNotFoundError("offline"),
                "We couldn't connect to 'https://huggingface.co' to load the files",
            ),
            None,  # no request behind it: raised as it is
        ),
        (wrapped(httpx.ConnectError("Name or service not known"), "connect failed"), UNREACHABLE),
        # A reset while tokenizer.json downloads: transformers re-raises it as "Can't load
        # tokenizer", which alone would read as a broken tokenizer.
        (
            wrapped(httpx.ReadError("Connection reset by peer"), "Can't load tokenizer for 'x'"),
            UNREACHABLE,
        ),
        (
            wrapped(httpx.RemoteProtocolError("peer closed connection"), "Can't load tokenizer"),
            UNREACHABLE,
        ),
        (hub_error(HfHubHTTPError, 429), "is limiting this client's requests (HTTP 429)"),
        (
            wrapped(hub_error(RepositoryNotFoundError, 404), "We couldn't connect to the Hub"),
            "the Hub has no such repository, revision or file (HTTP 404)",
        ),
        (hub_error(HfHubHTTPError, 503), "the Hub failed to answer (HTTP 5xx)"),
        (OSError("[Errno 5] Input/output error"), None),
    ],
)
def test_errors_that_may_pass_stay_retryable(error: Exception, expected: str | None) -> None:
    """Retried (exit 1); a request to the Hub behind it becomes a RemoteFailure naming the
    field, without what the Hub said or how the connection failed."""
    assert invalid_model(error, HUB_SPEC, HUB_SOURCE, stage="tokenizer") is None
    raised = RemoteFailure if expected is not None else type(error)
    with pytest.raises(raised) as caught, model_errors(HUB_SPEC, HUB_SOURCE, stage="model"):
        raise error
    if expected is not None:
        text = str(caught.value)
        assert text.startswith("model.name acme/no-such-model: ") and expected in text
        assert caught.value.__cause__ is error  # the details, for the log
        for remote in ("hub says no", "Name or service", "reset by peer", "peer closed"):
            assert remote not in text


@pytest.mark.parametrize(
    "case, expected",
    [
        ("config_not_json", "config.json is not a valid JSON file"),
        ("unknown_model_type", "model_type 'no_such_architecture'"),
        ("tokenizer_not_json", "its tokenizer cannot be loaded"),
    ],
)
def test_a_broken_local_model_is_named_before_the_data_is_read(
    tiny_model_dir: Path, tmp_path: Path, case: str, expected: str
) -> None:
    model = broken_copy(tiny_model_dir, tmp_path, case)
    spec = ModelSpec(path=str(model))
    source = resolve_model(spec, tmp_path)
    with pytest.raises(InvalidModel, match=expected) as error:
        load_tokenizer(spec, source, None)
    assert error.value.message.startswith(f"model.path {model}")


def test_the_model_load_is_judged_alike() -> None:
    """Unsloth re-raises transformers' config errors as RuntimeError with the same text."""
    text = (
        "The checkpoint you are trying to load has model type `qwen9` but Transformers does "
        "not recognize this architecture."
    )
    with (
        pytest.raises(InvalidModel, match="model_type 'qwen9'"),
        model_errors(HUB_SPEC, HUB_SOURCE, stage="model"),
    ):
        raise RuntimeError(text)
    # A ValueError of the model load that is not about the model stays as it is.
    with pytest.raises(ValueError), model_errors(HUB_SPEC, HUB_SOURCE, stage="model"):
        raise ValueError("something else")
    # Input errors raised while loading (a LoRA target the model lacks) pass unchanged.
    with pytest.raises(InvalidConfig), model_errors(HUB_SPEC, HUB_SOURCE, stage="model"):
        raise InvalidConfig("lora.targetModules: ...")
