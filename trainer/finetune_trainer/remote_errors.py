"""What a failed request to a remote service (an S3 store, the Hugging Face Hub) may say in
the termination message, and what only the log may.

A FineTuneJob's author chooses the S3 endpoints and the Hub ids the trainer connects to,
and reads the termination message back from the FineTuneJob's status. Quoting there what
the remote side answered (an error body, its ``Message``, an HTTP reason phrase) or how the
connection failed ("refused", "timed out", "Name or service not known") would make the
trainer a probe of the cluster's internal network: the text of any HTTP service's error
answer would come back, and the kind of failure tells an open port from a closed one from
a host that does not exist. So every message that may reach the status is built here from
sentences the trainer wrote:

- a connection-level failure (refused, reset, timed out, DNS, TLS, a proxy) and an answer
  that is not an S3 store's (no S3 error code) give one and the same sentence;
- an S3 error code from a fixed set (AccessDenied, InvalidAccessKeyId, NoSuchBucket...)
  gives the sentence written for it; any other code gives one generic sentence;
- an HTTP status appears only where it is the service's documented answer: S3's answer to
  a HEAD request (which has no body to hold a code), the Hub's 401, 403, 404, 429 and 5xx.

The details (each error of the chain, the remote text included) go to the trainer's log,
bounded in length (:func:`details`): the pod's log is the admin's and the author's tool to
diagnose, the status is not.
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
from dataclasses import dataclass
from typing import Literal

from .errors import exception_chain

# How much of one error's text, and of a whole chain or traceback, goes to the log.
DETAIL_LIMIT = 1000
DETAILS_LIMIT = 4000
TRACEBACK_LIMIT = 20000


class SafeMessage(Exception):
    """An exception whose text the trainer wrote from this module's sentences (and names,
    URIs and fields of the config): it may reach the termination message as it is, even
    when a remote error is chained behind it."""


class RemoteFailure(SafeMessage):
    """A request to a remote service failed in a way that may pass (no answer, a busy
    store, an answer the trainer cannot act on): the attempt exits 1 and is retried. The
    text names the field, the endpoint or URI and the fix, never the remote's words."""


def bounded(text: str, limit: int = DETAIL_LIMIT) -> str:
    """``text`` cut to about ``limit`` characters, keeping its start and its end."""
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    left = len(text) - head - tail
    return f"{text[:head]} [... {left} characters left out ...] {text[-tail:]}"


def brief(exc: BaseException) -> str:
    """``Type: text`` of one error, bounded: for log lines."""
    return bounded(f"{type(exc).__name__}: {exc}")


def details(exc: BaseException) -> str:
    """Every error of the chain, each bounded, the whole bounded too: for the log only."""
    return bounded("; caused by ".join(brief(e) for e in exception_chain(exc)), DETAILS_LIMIT)


# --- classifying ---------------------------------------------------------------------------

# Libraries whose every error is about a request: their text may hold what the remote said.
_REMOTE_MODULES = frozenset({"botocore", "boto3", "s3transfer", "urllib3", "requests", "httpx"})
# Libraries whose errors are about the transport alone.
_TRANSPORT_MODULES = frozenset({"urllib3", "httpcore"})
_CONNECTION_TYPES: tuple[type[BaseException], ...] = (
    ConnectionError,  # refused, reset, aborted, broken pipe
    TimeoutError,  # socket.timeout too
    socket.gaierror,  # DNS
    socket.herror,
    ssl.SSLError,  # TLS (ssl.CertificateError is a subclass)
    http.client.HTTPException,  # a malformed or cut-off answer
)
_BOTOCORE_CREDENTIAL_ERRORS = frozenset(
    {"NoCredentialsError", "PartialCredentialsError", "UnknownCredentialError"}
)


def _module_root(error: BaseException) -> str:
    return type(error).__module__.split(".", 1)[0]


def _class_names(error: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(error).__mro__}


def _is_hub_http_error(error: BaseException) -> bool:
    return "HfHubHTTPError" in _class_names(error)


def is_remote(exc: BaseException) -> bool:
    """Whether ``exc`` or an error behind it comes from a request to a remote service, so
    that its text may hold what the remote side said or how the connection failed."""
    return any(
        isinstance(error, _CONNECTION_TYPES)
        or _module_root(error) in _REMOTE_MODULES | _TRANSPORT_MODULES
        or _is_hub_http_error(error)
        for error in exception_chain(exc)
    )


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of the first error in the chain that carries an HTTP response
    (the Hub's errors, requests' and httpx's); None when there is none."""
    for error in exception_chain(exc):
        response = getattr(error, "response", None)
        status = getattr(response, "status_code", None)
        if isinstance(status, int):
            return status
    return None


# --- S3 ------------------------------------------------------------------------------------

S3Role = Literal["model", "dataset", "output", "eval"]


def s3_field(role: S3Role) -> str:
    """The spec section of a role's S3 location: the eval set's is dataset.eval."""
    return "dataset.eval" if role == "eval" else role


@dataclass(frozen=True)
class S3Answer:
    """The error code an S3 store answered with, and the operation it answered."""

    code: str
    operation: str

    @property
    def from_store(self) -> bool:
        """An S3 error code from an error document. botocore makes the HTTP status the
        code when the answer had none it could parse: a HEAD answer (S3 sends no body),
        or an answer that did not come from an S3 store at all."""
        return bool(self.code) and not self.code.isdigit()

    @property
    def head(self) -> bool:
        return self.operation.startswith("Head")


def s3_answer(exc: BaseException) -> S3Answer | None:
    """The store's answer behind ``exc``: the first error in its chain with a botocore
    response (boto3's managed transfers raise an error without one, with the ClientError
    as its context)."""
    for error in exception_chain(exc):
        response = getattr(error, "response", None)
        if isinstance(response, dict):
            code = str(response.get("Error", {}).get("Code", ""))
            return S3Answer(code, str(getattr(error, "operation_name", "") or ""))
    return None


def s3_error_code(exc: BaseException) -> str:
    """The S3 error code behind ``exc`` ('' when none): what the trainer decides on."""
    answer = s3_answer(exc)
    return answer.code if answer is not None else ""


_CREDENTIALS = (
    "{loc}.credentialsSecretRef ({env} in the pod), or the pod's cloud identity if it has none"
)
_ASK_AGAIN = "the next attempt tries again; if it goes on, ask the store's administrator"

# The S3 error codes the trainer explains: (what the answer means, what to fix). Every
# other code gets _UNKNOWN_CODE. A code is shown as the store wrote it only when it is a
# key here: the set is fixed, so nothing else the remote wrote reaches the status.
_S3_CODES: dict[str, tuple[str, str]] = {
    "AccessDenied": (
        "access denied",
        "check the bucket name and what the credentials may do: " + _CREDENTIALS + ", and "
        "what the bucket policy grants them",
    ),
    "AllAccessDisabled": (
        "all access to the bucket is disabled",
        "use another bucket in {loc}.uri, or ask the bucket's owner",
    ),
    "InvalidAccessKeyId": (
        "the store knows no such access key id",
        "check the access key id in " + _CREDENTIALS,
    ),
    # versitygw's answer to an access key id it does not know.
    "XAdminUserNotFound": (
        "the store knows no such access key id",
        "check the access key id in " + _CREDENTIALS,
    ),
    "SignatureDoesNotMatch": (
        "the secret access key does not match the access key id",
        "check the secret access key in " + _CREDENTIALS,
    ),
    "ExpiredToken": (
        "the session token has expired",
        "renew the temporary credentials in " + _CREDENTIALS,
    ),
    "TokenRefreshRequired": (
        "the session token has expired",
        "renew the temporary credentials in " + _CREDENTIALS,
    ),
    "InvalidToken": (
        "the session token is not valid",
        "check the session token in " + _CREDENTIALS,
    ),
    "NoSuchBucket": (
        "the bucket {bucket} does not exist at this endpoint",
        "check the bucket in {loc}.uri, and that {loc}.endpoint is the store that holds it",
    ),
    "InvalidBucketName": (
        "the store does not accept the bucket name {bucket}",
        "check the bucket in {loc}.uri",
    ),
    "NoSuchKey": ("there is no such object", "check {loc}.uri"),
    "NotFound": ("there is no such object", "check {loc}.uri"),
    "PermanentRedirect": (
        "the bucket is served from another region or endpoint",
        "set {loc}.region to the bucket's region, or {loc}.endpoint to its endpoint",
    ),
    "AuthorizationHeaderMalformed": (
        "the request was signed for another region than the bucket's",
        "set {loc}.region to the bucket's region",
    ),
    "IllegalLocationConstraintException": (
        "the bucket is in another region",
        "set {loc}.region to the bucket's region",
    ),
    "RequestTimeTooSkewed": (
        "the pod's clock is too far from the store's",
        "fix the clock of the node (NTP)",
    ),
    "InvalidObjectState": (
        "the object is in an archive storage class",
        "restore it, or copy it to a standard storage class, first",
    ),
    "PreconditionFailed": (
        "the object changed since it was read",
        "make sure no other run writes to {loc}.uri",
    ),
    "NotImplemented": (
        "the store does not implement this request",
        "use a store that implements the S3 requests the trainer makes (trainer/README.md)",
    ),
    "SlowDown": ("the store asks for fewer requests", _ASK_AGAIN),
    "ServiceUnavailable": ("the store is unavailable for now", _ASK_AGAIN),
    "InternalError": ("the store failed to handle the request", _ASK_AGAIN),
    "RequestTimeout": ("the store stopped waiting for the request", _ASK_AGAIN),
}

# S3's documented answers to a HEAD request, which carry a status and no body.
_HEAD_STATUS_CODES = {
    "301": "PermanentRedirect",
    "403": "AccessDenied",
    "404": "NotFound",
    "412": "PreconditionFailed",
    "500": "InternalError",
    "503": "ServiceUnavailable",
}

_UNKNOWN_CODE = (
    "the store answered with an error the trainer does not act on",
    "check {loc}.uri, {loc}.endpoint and the credentials; the trainer's log has the store's answer",
)
_NO_CREDENTIALS = (
    "no credentials were found",
    "set {loc}.credentialsSecretRef, or give the pod a cloud identity",
)


@dataclass(frozen=True)
class S3Problem:
    """What to say about a failed S3 request: ``message`` for the status, ``code`` (a
    code of the fixed set, or '') for decisions, ``refused`` when only a change of the
    config can help (the attempt exits 78)."""

    message: str
    code: str
    refused: bool


# Refusals that only a change of the bucket name or of the credentials can fix.
REFUSED_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "XAdminUserNotFound",
        "SignatureDoesNotMatch",
        "NoSuchBucket",
        "InvalidBucketName",
    }
)


def s3_unreachable(loc: str, endpoint: str, what: str) -> str:
    """The one sentence for every failure to get an S3 answer from ``endpoint``: ``loc``
    is the location's field (``output.s3``), ``what`` the request (``write of s3://...``)."""
    return (
        f"{loc}.endpoint: could not get an answer from {endpoint} (unreachable, refused "
        f"or not an S3 endpoint) to the {what}; check the endpoint and that the pod may "
        "reach it"
    )


def s3_problem(
    exc: BaseException, *, role: S3Role | None, endpoint: str, bucket: str, what: str
) -> S3Problem:
    """The message for ``exc``, raised by the S3 request described by ``what`` (such as
    'write of s3://bucket/key') to the ``role`` location (model, dataset, output) at
    ``endpoint``."""
    from finetune_api.contract import Env

    loc = f"{s3_field(role)}.s3" if role else "s3"
    answer = s3_answer(exc)
    code, shown = "", ""
    if answer is not None and answer.from_store:
        code = shown = answer.code
    elif answer is not None and answer.head and answer.code in _HEAD_STATUS_CODES:
        code, shown = _HEAD_STATUS_CODES[answer.code], f"HTTP {answer.code}"
    names = set().union(*(_class_names(e) for e in exception_chain(exc)))
    if code:
        meaning, fix = _S3_CODES.get(code, _UNKNOWN_CODE)
        refused = code in REFUSED_CODES
        if code not in _S3_CODES:
            code = ""
            head = f"{loc}: the {what} failed"
        else:
            head = f"{loc}: the {what} {'was refused' if refused else 'failed'} ({shown})"
    elif answer is None and names & _BOTOCORE_CREDENTIAL_ERRORS:
        meaning, fix = _NO_CREDENTIALS
        refused = True
        head = f"{loc}: the {what} could not be signed"
    else:
        return S3Problem(s3_unreachable(loc, endpoint, what), "", refused=False)
    values = {"loc": loc, "bucket": bucket, "env": Env.s3(role, "*") if role else "FTO_S3_*"}
    return S3Problem(
        f"{head}: {meaning.format(**values)}; {fix.format(**values)}", code, refused=refused
    )


# --- the Hugging Face Hub ------------------------------------------------------------------


def hub_endpoint() -> str:
    """The Hub the libraries talk to (``HF_ENDPOINT``, else huggingface.co)."""
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def hub_problem(exc: BaseException, *, what: str, token_field: str, elsewhere: str) -> str:
    """The message for ``exc``, raised by a request to the Hub for ``what`` (the field and
    its value, such as 'model.name acme/model'). ``token_field`` is where the token comes
    from; ``elsewhere`` says where else the data could be put."""
    endpoint = hub_endpoint()
    status = http_status(exc)
    if status is None:
        return (
            f"{what}: could not get an answer from {endpoint} (unreachable, refused or not "
            f"the Hugging Face Hub); check that the pod may reach it, or {elsewhere}"
        )
    if status == 401:
        meaning = f"the Hub did not accept the token (HTTP 401); check {token_field}"
    elif status == 403:
        meaning = (
            f"the Hub denied access (HTTP 403); check that the account of {token_field} may read it"
        )
    elif status == 404:
        meaning = "the Hub has no such repository, revision or file (HTTP 404); check the id"
    elif status == 429:
        meaning = (
            f"the Hub is limiting this client's requests (HTTP 429); the next attempt tries "
            f"again (a token in {token_field} raises the limit)"
        )
    elif status >= 500:
        meaning = "the Hub failed to answer (HTTP 5xx); the next attempt tries again"
    else:
        meaning = (
            "the Hub answered with an error the trainer does not act on; the trainer's log "
            "has its answer"
        )
    return f"{what}: {meaning}"


# --- the termination message ---------------------------------------------------------------

REMOTE_FALLBACK = (
    "a request to a remote service (an S3 store or the Hugging Face Hub) failed; the "
    "trainer's log has the details"
)


def failure_summary(exc: BaseException) -> str:
    """What the termination message says about an unexpected failure: the trainer's own
    text for its own errors, one fixed sentence for anything a remote error is behind
    (its text and even its type would tell how the request failed), else the error's type
    and text (a local failure: the author's config or data, the GPU, the disk)."""
    if isinstance(exc, RemoteFailure):
        return str(exc)
    if isinstance(exc, SafeMessage) or not is_remote(exc):
        return f"{type(exc).__name__}: {bounded(str(exc))}"
    return REMOTE_FALLBACK


def local_detail(exc: BaseException) -> str:
    """``Type: first line`` of an error for a message that may reach the status, or a
    pointer to the log when a remote error is behind it."""
    if is_remote(exc):
        return "a request to the Hub failed; the trainer's log has the details"
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {bounded(first, 300)}"
