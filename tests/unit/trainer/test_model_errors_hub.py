"""A Hub model id that cannot be had fails the attempt at once with exit 78 (InvalidModel),
naming model.name, saying whether the Hub gave no answer or has no such model, and what
to change: on huggingface_hub's own exception objects, on real sockets (a closed port, a
port that never answers, an HTTP service answering like the Hub) and through the CLI."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from huggingface_hub import constants
from huggingface_hub.errors import LocalEntryNotFoundError
from huggingface_hub.utils import hf_raise_for_status

from finetune_api.config import ModelSpec
from finetune_api.contract import ExitCode, TrainerReason
from finetune_trainer import model_errors
from finetune_trainer.errors import InvalidModel
from finetune_trainer.model_errors import check_hub_model
from finetune_trainer.remote_errors import RemoteFailure
from finetune_trainer.sources import ModelSource
from finetune_trainer.storage.retry import RetryPolicy

from .cli_helpers import cli_env, run_cli, termination, write_config

REPO_ID = "acme/no-such-model"
SPEC = ModelSpec(name=REPO_ID, revision="v9")
SOURCE = ModelSource(REPO_ID, "v9", False, f"Hub model {REPO_ID}")
FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02)
SECRET = "SECRET-FROM-THE-REMOTE-SIDE"

# What each kind of message must say: the field, which of the two it was, and the fix.
UNREACHABLE = (
    f"model.name {REPO_ID}: the Hugging Face Hub at ",
    "cannot be reached",
    "model.pvc or model.s3 instead of model.name",
    "HF_ENDPOINT",
)
NOT_FOUND = (
    f"model.name {REPO_ID}: no such model on the Hugging Face Hub",
    "check the id (owner/name) and model.revision",
    "model.tokenSecretRef",
)


def assert_says(message: str, parts: tuple[str, ...]) -> None:
    for part in parts:
        assert part in message, message
    assert SECRET not in message
    for how in ("Connection refused", "timed out", "Errno"):
        assert how not in message


# --- remote sides ---------------------------------------------------------------------------


class HubLike:
    """A loopback HTTP service answering every request with ``status`` and ``headers``
    (and a secret-looking body); records the requests."""

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status, self.headers = status, headers
        self.paths: list[str] = []
        self.endpoint = ""


@contextmanager
def hub_like(status: int, headers: dict[str, str] | None = None) -> Iterator[HubLike]:
    hub = HubLike(status, headers or {})

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self) -> None:
            hub.paths.append(f"{self.command} {self.path}")
            body = SECRET.encode()
            self.send_response(hub.status)
            for name, value in hub.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = answer

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    hub.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def closed_port() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def hub_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Online, an empty cache; the test sets HF_ENDPOINT."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return monkeypatch


def no_request(monkeypatch: pytest.MonkeyPatch) -> None:
    def head(url: str, **kwargs: Any) -> Any:
        raise AssertionError(f"asked {url}")

    monkeypatch.setattr("huggingface_hub.get_hf_file_metadata", head)


def check(**kwargs: Any) -> None:
    check_hub_model(SPEC, SOURCE, None, **{"policy": FAST, **kwargs})


# --- huggingface_hub's exception objects ----------------------------------------------------


def answered(status: int, **headers: str) -> Exception:
    """The error huggingface_hub raises for this answer to a HEAD of config.json."""
    url = f"https://huggingface.co/{REPO_ID}/resolve/v9/config.json"
    response = httpx.Response(
        status, headers=headers, content=SECRET.encode(), request=httpx.Request("HEAD", url)
    )
    try:
        hf_raise_for_status(response)
    except Exception as exc:
        return exc
    raise AssertionError(f"no error for HTTP {status}")


def connect_error(text: str) -> Exception:
    return httpx.ConnectError(text, request=httpx.Request("HEAD", "https://huggingface.co/x"))


@pytest.mark.parametrize(
    "error, parts",
    [
        pytest.param(connect_error("[Errno 111] Connection refused"), UNREACHABLE, id="refused"),
        pytest.param(connect_error("[Errno -2] Name or service not known"), UNREACHABLE, id="dns"),
        pytest.param(httpx.ConnectTimeout("timed out"), UNREACHABLE, id="connect-timeout"),
        pytest.param(httpx.ReadTimeout("timed out"), UNREACHABLE, id="read-timeout"),
        pytest.param(httpx.ProxyError("proxy said no"), UNREACHABLE, id="proxy"),
        pytest.param(LocalEntryNotFoundError("not cached"), UNREACHABLE, id="local-entry"),
        pytest.param(answered(404), NOT_FOUND, id="404"),
        pytest.param(answered(401, **{"X-Error-Code": "RepoNotFound"}), NOT_FOUND, id="401-repo"),
        pytest.param(answered(404, **{"X-Error-Code": "RepoNotFound"}), NOT_FOUND, id="404-repo"),
        pytest.param(
            answered(401, **{"X-Error-Message": "Invalid credentials in Authorization header"}),
            NOT_FOUND,
            id="401-bad-token",
        ),
        pytest.param(
            answered(403, **{"X-Error-Code": "GatedRepo"}),
            (f"model.name {REPO_ID} is a gated repository: accept its terms", "tokenSecretRef"),
            id="gated",
        ),
        pytest.param(
            answered(404, **{"X-Error-Code": "RevisionNotFound"}),
            (f"model.revision v9 does not exist in model.name {REPO_ID}",),
            id="revision",
        ),
        pytest.param(
            answered(403, **{"X-Error-Message": "Access to this resource is disabled."}),
            (f"model.name {REPO_ID}: the Hugging Face Hub has disabled access",),
            id="disabled",
        ),
        pytest.param(
            answered(404, **{"X-Error-Code": "EntryNotFound"}),
            (f"model.name {REPO_ID} has no config.json",),
            id="no-config",
        ),
    ],
)
def test_no_answer_and_no_such_model_are_invalid_model(
    hub_env: pytest.MonkeyPatch, error: Exception, parts: tuple[str, ...]
) -> None:
    hub_env.setenv("HF_ENDPOINT", "https://huggingface.co")
    tries: list[str] = []

    def head(url: str, **kwargs: Any) -> Any:
        tries.append(url)
        raise error

    hub_env.setattr("huggingface_hub.get_hf_file_metadata", head)
    with pytest.raises(InvalidModel) as caught:
        check()
    assert caught.value.reason == TrainerReason.INVALID_MODEL
    assert caught.value.__cause__ is error  # the details, for the log
    assert_says(caught.value.message, parts)
    assert tries[0] == f"https://huggingface.co/{REPO_ID}/resolve/v9/config.json"
    # An answer is final; only no answer is asked again (within the deadline).
    assert len(tries) == (FAST.attempts if parts is UNREACHABLE else 1)


@pytest.mark.parametrize(
    "error, expected",
    [
        (answered(429), "the Hub is limiting this client's requests (HTTP 429)"),
        (answered(503), "the Hub failed to answer (HTTP 5xx)"),
        (answered(403), "the Hub denied access (HTTP 403)"),
    ],
)
def test_an_answer_that_may_change_stays_retryable(
    hub_env: pytest.MonkeyPatch, error: Exception, expected: str
) -> None:
    """A Hub that rate limits or fails answers otherwise later: RemoteFailure (exit 1,
    the Job retries), after the in-process tries for 429 and 5xx."""
    hub_env.setenv("HF_ENDPOINT", "https://huggingface.co")
    tries = []

    def head(url: str, **kwargs: Any) -> Any:
        tries.append(url)
        raise error

    hub_env.setattr("huggingface_hub.get_hf_file_metadata", head)
    with pytest.raises(RemoteFailure) as caught:
        check()
    assert str(caught.value).startswith(f"model.name {REPO_ID}: {expected}")
    assert SECRET not in str(caught.value)
    assert len(tries) == (1 if "403" in expected else FAST.attempts)


def test_an_unexpected_local_error_passes_unchanged(hub_env: pytest.MonkeyPatch) -> None:
    def head(url: str, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    hub_env.setattr("huggingface_hub.get_hf_file_metadata", head)
    with pytest.raises(RuntimeError, match="a bug"):
        check()


# --- real sockets ---------------------------------------------------------------------------


def test_a_closed_port_is_unreachable_after_brief_tries(hub_env: pytest.MonkeyPatch) -> None:
    hub_env.setenv("HF_ENDPOINT", closed_port())
    waits: list[float] = []
    with pytest.raises(InvalidModel) as caught:
        check(policy=model_errors.HUB_CHECK_RETRY, sleep=waits.append)
    assert_says(caught.value.message, UNREACHABLE)
    assert len(waits) == model_errors.HUB_CHECK_RETRY.attempts - 1
    assert sum(waits) < 10


def test_a_port_that_never_answers_gives_up_at_the_deadline(hub_env: pytest.MonkeyPatch) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        hub_env.setenv("HF_ENDPOINT", f"http://127.0.0.1:{sock.getsockname()[1]}")
        started = time.monotonic()
        with pytest.raises(InvalidModel) as caught:
            check(policy=RetryPolicy(attempts=10, base_delay=0.1), deadline_s=2.0)
        elapsed = time.monotonic() - started
    finally:
        sock.close()
    assert_says(caught.value.message, UNREACHABLE)
    assert elapsed < 6, elapsed


@pytest.mark.parametrize(
    "status, headers, parts, requests",
    [
        (404, {}, NOT_FOUND, 1),
        (401, {"X-Error-Code": "RepoNotFound"}, NOT_FOUND, 1),
        (403, {"X-Error-Code": "GatedRepo"}, ("is a gated repository",), 1),
        # An answer, but no Hub's: no X-Repo-Commit.
        (200, {"ETag": '"abc"'}, UNREACHABLE, 1),
    ],
)
def test_an_http_service_answering_like_the_hub(
    hub_env: pytest.MonkeyPatch,
    status: int,
    headers: dict[str, str],
    parts: tuple[str, ...],
    requests: int,
) -> None:
    with hub_like(status, headers) as hub:
        hub_env.setenv("HF_ENDPOINT", hub.endpoint)
        with pytest.raises(InvalidModel) as caught:
            check()
    assert_says(caught.value.message, parts)
    assert len(hub.paths) == requests


def test_a_hub_that_answers_lets_the_load_go_on(hub_env: pytest.MonkeyPatch) -> None:
    with hub_like(200, {"X-Repo-Commit": "a" * 40, "ETag": '"abc"'}) as hub:
        hub_env.setenv("HF_ENDPOINT", hub.endpoint)
        check()
    assert len(hub.paths) == 1


def test_a_failing_hub_is_asked_again_then_retried_by_the_job(
    hub_env: pytest.MonkeyPatch,
) -> None:
    with hub_like(503) as hub:
        hub_env.setenv("HF_ENDPOINT", hub.endpoint)
        with pytest.raises(RemoteFailure, match="HTTP 5xx"):
            check()
    assert len(hub.paths) == FAST.attempts


# --- no request at all ----------------------------------------------------------------------


def test_offline_mode_without_a_cached_copy_is_invalid_model(
    hub_env: pytest.MonkeyPatch,
) -> None:
    hub_env.setattr(constants, "HF_HUB_OFFLINE", True)
    no_request(hub_env)
    with pytest.raises(InvalidModel) as caught:
        check()
    assert_says(
        caught.value.message,
        (f"model.name {REPO_ID}: Hub access is turned off (HF_HUB_OFFLINE)", "model.pvc"),
    )


def test_a_cached_model_and_a_local_one_need_no_hub(
    hub_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """transformers loads a cached copy when the Hub does not answer: nothing to check."""
    no_request(hub_env)
    commit = "b" * 40
    repo = Path(constants.HF_HUB_CACHE) / f"models--{REPO_ID.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "v9").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    check()
    check_hub_model(
        ModelSpec(path=str(tmp_path)),
        ModelSource(str(tmp_path), None, True, f"model.path {tmp_path}"),
        None,
    )


# --- the CLI, as the container runs it ------------------------------------------------------


@pytest.mark.parametrize(
    "hub, flags",
    [("closed port", []), ("404", []), ("closed port", ["--dry-run"])],
    ids=["unreachable", "not-found", "unreachable-dry-run"],
)
def test_the_trainer_exits_78_within_seconds(
    tmp_path: Path, tiny_dataset_path: Path, hub: str, flags: list[str]
) -> None:
    """``finetune-train`` against a Hub that does not answer, and one that has no such
    repository: exit 78, InvalidModel, the message names model.name and the fix, and none
    of huggingface_hub's own backoff first."""
    config = write_config(
        tmp_path / "config.yaml",
        {
            "model": {"name": REPO_ID},
            "dataset": {"path": str(tiny_dataset_path)},
            "output": {"path": str(tmp_path / "out")},
            "training": {"maxSteps": 1},
        },
    )

    def run(endpoint: str) -> tuple[Any, float]:
        env = cli_env(
            tmp_path,
            HF_ENDPOINT=endpoint,
            HF_HUB_OFFLINE="0",
            HF_HUB_DISABLE_XET="1",
            HF_HOME=str(tmp_path / "hf-home"),
        )
        env.pop("HF_TOKEN", None)
        started = time.monotonic()
        result = run_cli(["--config", str(config), *flags], env, timeout=120)
        return result, time.monotonic() - started

    if hub == "closed port":
        result, elapsed = run(closed_port())
        parts = UNREACHABLE
    else:
        with hub_like(404) as server:
            result, elapsed = run(server.endpoint)
        # One request for the model (huggingface_hub may ask the Hub other things).
        asked = [path for path in server.paths if REPO_ID in path]
        assert asked == [f"HEAD /{REPO_ID}/resolve/main/config.json"]
        parts = NOT_FOUND
    assert result.returncode == ExitCode.INVALID_INPUT, result.stderr[-3000:]
    message = termination(tmp_path)
    assert (message.status, message.reason) == ("invalid_input", TrainerReason.INVALID_MODEL)
    assert_says(message.message, parts)
    assert "Retrying in" not in result.stderr  # huggingface_hub's own backoff never ran
    # Interpreter start and the imports take most of it; the check itself a few seconds.
    assert elapsed < 30, elapsed
