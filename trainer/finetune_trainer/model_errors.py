"""Loading the model's config and tokenizer, with load errors that are the input's fault
turned into ``InvalidModel``.

transformers reports a Hub id that does not exist, a gated repository, a missing revision,
a config.json that is not JSON or a model_type it does not know as ``OSError`` or
``ValueError``, like a network outage. Left as they are they exit 1 and the Job retries a
model that can never load; translated, they exit 78 and the message names the field to fix.

Before anything loads, a Hub id is checked (:func:`check_hub_model`): one request for its
config.json, retried for a few seconds. A Hub the pod cannot reach (a cluster without
egress, a wrong ``HF_ENDPOINT``, offline mode with nothing cached) and an id the Hub does
not have (or will not show this token) are answered the same way every time, so both exit
78 at once, saying which it was and what to change, instead of spending the Job's retries
(and huggingface_hub's own backoff, 20 s and more a file) on them. What may pass later (the
Hub rate limiting or failing, a download cut off once the Hub has answered) is raised as a
``RemoteFailure`` and retried; its text names the field and says what the Hub's answer
means, never what the Hub said (remote_errors.py). Training and ``--dry-run`` load through
here, so both judge the same error the same way.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal, NoReturn

from finetune_api.config import ModelSpec

from .errors import InvalidInput, InvalidModel, exception_chain
from .remote_errors import (
    RemoteFailure,
    bounded,
    details,
    http_status,
    hub_endpoint,
    hub_problem,
    is_remote,
    local_detail,
)
from .sources import ModelSource
from .storage.retry import RetryPolicy, with_retries

log = logging.getLogger(__name__)

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


def _not_found(what: str, token: str | None) -> str:
    """The message for a Hub id the Hub does not have, or does not show this token (the
    Hub answers both alike, 401 or 404)."""
    return (
        f"{what}: no such model on the Hugging Face Hub, or it is private or gated and "
        f"{_token_hint(token)} cannot read it; check the id (owner/name) and model.revision, "
        "and for a private or gated model the token Secret of model.tokenSecretRef"
    )


def hub_unreachable(what: str) -> str:
    """The one message for a Hub that gives no answer, whatever the reason (no route,
    refused, DNS, a timeout, a service that is not a Hub): remote_errors.py says why the
    reason is not told."""
    return (
        f"{what}: the Hugging Face Hub at {bounded(hub_endpoint(), 200)} cannot be reached "
        "from the pod (no answer, refused or not a Hub), so the model cannot be downloaded; "
        "without Hub access put the model on a PVC or in S3 and set model.pvc or model.s3 "
        "instead of model.name (or, where the cluster has a Hub mirror, a trainer image "
        "whose HF_ENDPOINT names it)"
    )


def hub_offline(what: str) -> str:
    return (
        f"{what}: Hub access is turned off (HF_HUB_OFFLINE) and the model is not in the "
        "local cache, so it cannot be loaded; put the model on a PVC or in S3 and set "
        "model.pvc or model.s3 instead of model.name, or allow Hub access"
    )


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
        DisabledRepoError,
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
    if any(isinstance(e, DisabledRepoError) for e in errors):
        return InvalidModel(
            f"{what}: the Hugging Face Hub has disabled access to this repository; use "
            "another model"
        )
    if (
        any(isinstance(e, RepositoryNotFoundError) for e in errors)
        or "is not a valid model identifier" in text
    ):
        return InvalidModel(_not_found(what, token))
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


# Three tries, about 1 s and then 2 s apart, all within the deadline (each request's
# timeout included): long enough for a blip, short enough that a pod with no route to the
# Hub says so within seconds. huggingface_hub's own backoff (five retries, over 20 s a
# file) is not used here: these tries take its place.
HUB_CHECK_RETRY = RetryPolicy(attempts=3, base_delay=1.0, max_delay=4.0)
HUB_CHECK_DEADLINE_S = 20.0


def check_hub_model(
    spec: ModelSpec,
    source: ModelSource,
    token: str | None,
    *,
    policy: RetryPolicy = HUB_CHECK_RETRY,
    deadline_s: float = HUB_CHECK_DEADLINE_S,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Ask the Hub for the model's config.json (metadata only). Raise InvalidModel when no
    answer comes before the deadline, offline mode is on, or the Hub has no such id,
    revision or config.json for this token; RemoteFailure when it is rate limiting or
    failing (5xx) past the deadline. A local source, or a Hub id whose config.json is
    cached, passes unasked: transformers loads the cached copy when the Hub is away."""
    if source.is_local:
        return
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache

    what = model_field(spec, source)
    repo, revision = source.name_or_path, source.revision
    if isinstance(try_to_load_from_cache(repo, "config.json", revision=revision), str):
        return
    if constants.HF_HUB_OFFLINE:
        raise InvalidModel(hub_offline(what))
    endpoint = hub_endpoint()
    url = hf_hub_url(repo, "config.json", revision=revision, endpoint=endpoint)
    deadline = time.monotonic() + deadline_s

    def left() -> float:
        return deadline - time.monotonic()

    def head() -> Any:
        timeout = max(1.0, min(float(constants.HF_HUB_ETAG_TIMEOUT), left()))
        return get_hf_file_metadata(url, token=token, timeout=timeout)

    def final(exc: BaseException) -> bool:
        return left() <= 0 or not _transient(list(exception_chain(exc)))

    try:
        metadata = with_retries(
            head,
            what=f"asking {endpoint} for {repo}",
            policy=policy,
            fatal=final,
            sleep=lambda wait: sleep(max(0.0, min(wait, left()))),
        )
    except Exception as exc:
        _raise_hub_check_failure(exc, spec, source, token)
    if metadata.commit_hash is None:  # an answer, but not a Hub's (no X-Repo-Commit)
        log.error("%s: %s answered without a repository commit", what, url)
        raise InvalidModel(hub_unreachable(what))


def _raise_hub_check_failure(
    exc: Exception, spec: ModelSpec, source: ModelSource, token: str | None
) -> NoReturn:
    """The error the failed check stands for: InvalidModel for no answer and for an id the
    Hub does not have, RemoteFailure for an answer that may change (429, 5xx, others)."""
    what = model_field(spec, source)
    log.error("%s: the Hub check failed: %s", what, details(exc))
    status = http_status(exc)
    if status is None and _transient(list(exception_chain(exc))):
        raise InvalidModel(hub_unreachable(what)) from exc
    invalid = invalid_model(exc, spec, source, stage="model", token=token)
    if invalid is not None:
        raise invalid from exc
    from huggingface_hub.errors import RemoteEntryNotFoundError

    if any(isinstance(e, RemoteEntryNotFoundError) for e in exception_chain(exc)):
        raise InvalidModel(
            f"{what} has no config.json, so it is not a transformers model; point "
            "model.name at one (for example unsloth/gpt-oss-20b)"
        ) from exc
    if status in (401, 404):
        raise InvalidModel(_not_found(what, token)) from exc
    if status is not None or is_remote(exc):
        raise RemoteFailure(
            hub_problem(
                exc,
                what=what,
                token_field="model.tokenSecretRef",
                elsewhere="put the model on a PVC or S3 (model.pvc, model.s3)",
            )
        ) from exc
    raise exc


def load_tokenizer(spec: ModelSpec, source: ModelSource, token: str | None) -> Any:
    """The model's tokenizer. A Hub id is checked first (:func:`check_hub_model`), then
    its config is read (a few KB, no weights), so a model that cannot load -- not on the
    Hub, the Hub out of reach, unknown model_type, broken config.json -- fails here, before
    the data is prepared, in training and in the dry run alike."""
    check_hub_model(spec, source, token)
    from transformers import AutoConfig, AutoTokenizer

    with model_errors(spec, source, stage="tokenizer", token=token):
        AutoConfig.from_pretrained(source.name_or_path, revision=source.revision, token=token)
        return AutoTokenizer.from_pretrained(
            source.name_or_path, revision=source.revision, token=token
        )
