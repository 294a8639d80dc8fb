"""Loading the model's config and tokenizer, with load errors that are the input's fault
turned into ``InvalidModel``.

transformers reports a Hub id that does not exist, a gated repository, a missing revision,
a config.json that is not JSON or a model_type it does not know as ``OSError`` or
``ValueError``, like a network outage. Left as they are they exit 1 and the Job retries a
model that can never load; translated, they exit 78 and the message names the field to fix.
What may pass (no connection, the Hub down, offline mode without a cached copy) is
retried; when a request to the Hub is behind it, it is raised as a ``RemoteFailure`` whose
text names the field and says what the Hub's answer means, never what the Hub said
(remote_errors.py). Training and ``--dry-run`` load through here, so both judge the same
error the same way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from finetune_api.config import ModelSpec

from .errors import InvalidInput, InvalidModel, exception_chain
from .remote_errors import RemoteFailure, bounded, hub_problem, is_remote, local_detail
from .sources import ModelSource

Stage = Literal["tokenizer", "model"]

# Messages of transient failures: never the input's fault, even when a pattern below matches.
_TRANSIENT = re.compile(
    r"couldn't connect|connection error|timed out|temporarily unavailable|offline mode",
    re.IGNORECASE,
)
_NOT_JSON = re.compile(r"config file at '(?P<file>[^']*)' is not a valid JSON file")
_UNKNOWN_TYPE = re.compile(r"model type `(?P<type>[^`]*)` but Transformers does not recognize")


def model_field(spec: ModelSpec, source: ModelSource) -> str:
    """How the message names the model: the config field and its value."""
    if spec.name is not None:
        return f"model.name {spec.name}"
    return source.description


def _transient_types() -> tuple[type[BaseException], ...]:
    """Exceptions of the transport, whatever the request: a dropped connection, a reset
    mid-download, a timeout. huggingface_hub talks httpx; other libraries may use requests."""
    import httpx
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    types: list[type[BaseException]] = [
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        ConnectionError,
        TimeoutError,
        httpx.TransportError,
    ]
    try:
        from requests import exceptions as requests_errors

        types += [
            requests_errors.ConnectionError,
            requests_errors.Timeout,
            requests_errors.ChunkedEncodingError,
        ]
    except ImportError:
        pass
    return tuple(types)


def _transient(errors: list[BaseException]) -> bool:
    from huggingface_hub.errors import HfHubHTTPError

    transient = _transient_types()
    for error in errors:
        if isinstance(error, transient):
            return True
        # Rate limited, or the Hub failing: it answers differently later.
        response = error.response if isinstance(error, HfHubHTTPError) else None
        status = getattr(response, "status_code", None)
        if status is not None and (status == 429 or status >= 500):
            return True
    return any(_TRANSIENT.search(str(error)) for error in errors)


def _token_hint(token: str | None) -> str:
    if token:
        return "the token model.tokenSecretRef gives"
    return "a token (set model.tokenSecretRef; none is set now)"


def invalid_model(
    exc: BaseException,
    spec: ModelSpec,
    source: ModelSource,
    *,
    stage: Stage,
    token: str | None = None,
) -> InvalidModel | None:
    """The InvalidModel that ``exc``, raised while loading ``stage``, stands for; None when
    it may be transient or is not recognisably the model's fault (then it is retried)."""
    from huggingface_hub.errors import (
        GatedRepoError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    errors = list(exception_chain(exc))
    if _transient(errors):
        return None
    what = model_field(spec, source)
    text = "\n".join(str(error) for error in errors)
    hub = f"https://huggingface.co/{spec.name}"

    if any(isinstance(e, GatedRepoError) for e in errors) or "access a gated repo" in text:
        return InvalidModel(
            f"{what} is a gated repository: accept its terms at {hub} with the Hugging Face "
            f"account of {_token_hint(token)}"
        )
    if (
        any(isinstance(e, RepositoryNotFoundError) for e in errors)
        or "is not a valid model identifier" in text
    ):
        return InvalidModel(
            f"{what}: no such model on the Hugging Face Hub, or it is private and "
            f"{_token_hint(token)} cannot read it; check the id (owner/name) or the token"
        )
    if any(isinstance(e, RevisionNotFoundError) for e in errors) or (
        "is not a valid git identifier" in text
    ):
        return InvalidModel(
            f"model.revision {spec.revision} does not exist in {what}; use a branch, tag or "
            f"commit the repository has (see {hub}/tree/main)"
        )
    # What the messages quote comes from transformers' own text, never from an error
    # that carries what a remote service said.
    local = [error for error in errors if not is_remote(error)]
    text = "\n".join(str(error) for error in local)
    if match := _NOT_JSON.search(text):
        return InvalidModel(
            f"{what}: {bounded(match['file'], 300)} is not a valid JSON file; replace it with "
            "the model's config.json (model.save_pretrained writes one)"
        )
    if match := _UNKNOWN_TYPE.search(text):
        from transformers import __version__

        return InvalidModel(
            f"{what}: its config.json has model_type {bounded(match['type'], 100)!r}, an "
            "architecture "
            f"transformers {__version__} does not know; point it at a gpt-oss model (for "
            "example unsloth/gpt-oss-20b) or correct model_type"
        )
    if "trust_remote_code" in text:
        return InvalidModel(
            f"{what} needs its own Python code to load (trust_remote_code), which the trainer "
            "does not run; use a model transformers supports natively"
        )
    if "does not appear to have a file named" in text:
        detail = next(str(e) for e in local if "does not appear to have" in str(e))
        return InvalidModel(
            f"{what} is not a complete transformers model: {bounded(detail.splitlines()[0], 300)}"
        )
    if stage == "tokenizer" and (
        isinstance(exc, ValueError)
        or any(isinstance(e, json.JSONDecodeError) for e in errors)
        or "Can't load tokenizer" in text
    ):
        return InvalidModel(
            f"{what}: its tokenizer cannot be loaded ({local_detail(exc)}); save a working "
            "tokenizer next to the model (tokenizer.save_pretrained)"
        )
    return None


@contextmanager
def model_errors(
    spec: ModelSpec, source: ModelSource, *, stage: Stage, token: str | None = None
) -> Iterator[None]:
    """Re-raise the model's own load errors as InvalidModel, and a failed request to the Hub
    that may pass as RemoteFailure; let everything else through."""
    try:
        yield
    except InvalidInput:
        raise
    except Exception as exc:
        invalid = invalid_model(exc, spec, source, stage=stage, token=token)
        if invalid is not None:
            raise invalid from exc
        if spec.name is not None and is_remote(exc):
            raise RemoteFailure(
                hub_problem(
                    exc,
                    what=model_field(spec, source),
                    token_field="model.tokenSecretRef",
                    elsewhere="put the model on a PVC or S3 (model.pvc, model.s3)",
                )
            ) from exc
        raise


def load_tokenizer(spec: ModelSpec, source: ModelSource, token: str | None) -> Any:
    """The model's tokenizer. Its config is read first (a few KB, no weights), so a model
    that cannot load -- unknown model_type, broken config.json -- fails here, before the
    data is prepared, in training and in the dry run alike."""
    from transformers import AutoConfig, AutoTokenizer

    with model_errors(spec, source, stage="tokenizer", token=token):
        AutoConfig.from_pretrained(source.name_or_path, revision=source.revision, token=token)
        return AutoTokenizer.from_pretrained(
            source.name_or_path, revision=source.revision, token=token
        )
