"""The termination message never quotes what a remote service answered, nor how a
connection failed: the FineTuneJob's author chooses the endpoints and reads the status, so
either would make the trainer a probe of the cluster's network. On real sockets and the real
S3 server: an HTTP service that answers every request with an error and a secret-looking
body, a closed port, a port that never answers, a host that does not resolve, wrong
credentials, and the real CLI against the HTTP service."""

from __future__ import annotations

import http.server
import json
import logging
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from finetune_api.config import TrainerConfig
from finetune_api.contract import ExitCode
from finetune_trainer.errors import InvalidConfig, InvalidInput
from finetune_trainer.remote_errors import (
    DETAILS_LIMIT,
    REMOTE_FALLBACK,
    RemoteFailure,
    failure_summary,
    s3_unreachable,
)
from finetune_trainer.resume import find_resume_point
from finetune_trainer.sources import resolve_dataset, resolve_model
from finetune_trainer.storage.retry import RetryPolicy
from finetune_trainer.storage.s3 import S3Store
from finetune_trainer.storage.targets import S3Target

from .cli_helpers import REPO, cli_env, run_cli, write_config

SECRET = "SECRET-FROM-INTERNAL-SERVICE"
ONCE = RetryPolicy(attempts=1)
PLAIN = f"{SECRET}: internal admin console, token=abc123\n".encode()
# An answer shaped like an S3 error document, with a code the trainer does not know.
UNKNOWN_CODE = (
    f"<?xml version='1.0'?><Error><Code>InternalSaysNo</Code><Message>{SECRET}</Message></Error>"
).encode()
# ... and with a code it knows: the code is told, the message is not.
ACCESS_DENIED = (
    f"<?xml version='1.0'?><Error><Code>AccessDenied</Code><Message>{SECRET}</Message></Error>"
).encode()
REASON_PHRASES = ("Forbidden", "Internal Server Error")


# --- remote sides ---------------------------------------------------------------------------


@contextmanager
def answering(status: int, body: bytes) -> Iterator[str]:
    """An HTTP server on loopback answering every request with ``status`` and ``body``;
    yields its endpoint."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = answer

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextmanager
def closed_port() -> Iterator[str]:
    """A loopback port nothing listens on (connections are refused)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    yield f"http://127.0.0.1:{port}"


@contextmanager
def silent_port() -> Iterator[str]:
    """A loopback port that accepts connections (the kernel's backlog) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


@contextmanager
def unresolvable() -> Iterator[str]:
    yield "http://no-such-store.invalid:9000"


def short_timeout_store(endpoint: str, bucket: str = "bucket") -> S3Store:
    """The trainer's S3 store on a client that gives up after a second and does not retry
    (the trainer's own client waits 120 s for an answer)."""
    import boto3
    from botocore.config import Config

    client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="not-a-secret",
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"total_max_attempts": 1},
            connect_timeout=1,
            read_timeout=1,
        ),
    )
    return S3Store(client, bucket, retry=ONCE, role="output", endpoint=endpoint)


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials for every location (the SDK's default chain would ask the instance
    metadata service), and one try per request in the trainer's retry loop."""
    for role in ("MODEL", "DATASET", "OUTPUT"):
        monkeypatch.setenv(f"FTO_S3_{role}_ACCESS_KEY_ID", "AKIDEXAMPLE")
        monkeypatch.setenv(f"FTO_S3_{role}_SECRET_ACCESS_KEY", "not-a-secret")
    monkeypatch.setattr("finetune_trainer.storage.s3.DEFAULT_RETRY", ONCE)


def status_text(exc: BaseException) -> str:
    """What the trainer writes into the termination message for ``exc`` (train.py)."""
    return str(exc) if isinstance(exc, InvalidInput) else failure_summary(exc)


def location(endpoint: str, prefix: str) -> dict[str, str]:
    return {"uri": f"s3://bucket/{prefix}", "endpoint": endpoint, "region": "us-east-1"}


def fail_at(path: str, endpoint: str, tmp_path: Path) -> BaseException:
    """Run one of the trainer's S3 paths against ``endpoint``; the error it raised."""
    config = TrainerConfig.from_mapping(
        {
            "model": {"s3": location(endpoint, "models/m")},
            "dataset": {"s3": location(endpoint, "data/train.jsonl")},
            "output": {"s3": location(endpoint, "runs/a")},
        }
    )
    assert config.output.s3 is not None
    with pytest.raises(Exception) as caught:
        if path == "model":
            resolve_model(config.model, tmp_path)
        elif path == "dataset":
            resolve_dataset(config.dataset, tmp_path)
        else:
            store = S3Store.for_location(config.output.s3, "output")
            target = S3Target(store, "runs/a", tmp_path / "staging")
            if path == "output write probe":
                target.prepare()
            else:
                find_resume_point(target, "fingerprint")
    return caught.value


PATHS = ("output write probe", "model", "dataset", "resume")
# The request each path makes first, as the messages name it.
FIRST_REQUEST = {
    "output write probe": r"test write of s3://bucket/runs/a/\.write-probe-[0-9a-f]{12} "
    r"\(made at startup to check write access\)",
    "model": r"listing of s3://bucket/models/m/",
    "dataset": r"listing of s3://bucket/data/train\.jsonl/",
    "resume": r"listing of s3://bucket/runs/a/",
}
FIELD = {"output write probe": "output", "model": "model", "dataset": "dataset", "resume": "output"}


def assert_nothing_remote(text: str) -> None:
    assert SECRET not in text
    assert "InternalSaysNo" not in text
    for phrase in REASON_PHRASES:
        assert phrase not in text


# --- (a) an HTTP service that answers with an error and a secret ----------------------------


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("status", [403, 500])
def test_an_http_service_answering_an_error_reads_as_no_s3_answer(
    s3_env: None, tmp_path: Path, caplog: pytest.LogCaptureFixture, path: str, status: int
) -> None:
    """Neither its body nor its reason phrase comes back, nor even that something answered:
    the message is the one for an endpoint that cannot be reached."""
    with answering(status, PLAIN) as endpoint:
        error = fail_at(path, endpoint, tmp_path)
    text = status_text(error)
    assert isinstance(error, RemoteFailure)  # retried (exit 1), as an unreachable store
    pattern = re.escape(s3_unreachable(f"{FIELD[path]}.s3", endpoint, "@")).replace(
        "@", FIRST_REQUEST[path]
    )
    assert re.fullmatch(pattern, text), text
    assert_nothing_remote(text)
    assert f"({status})" in caplog.text  # the log keeps what was answered


@pytest.mark.parametrize("path", PATHS)
def test_an_error_code_the_trainer_does_not_know_gets_one_generic_sentence(
    s3_env: None, tmp_path: Path, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    with answering(403, UNKNOWN_CODE) as endpoint:
        error = fail_at(path, endpoint, tmp_path)
    text = status_text(error)
    field = f"{FIELD[path]}.s3"
    assert re.fullmatch(
        f"{re.escape(field)}: the {FIRST_REQUEST[path]} failed: the store answered with an "
        f"error the trainer does not act on; check {re.escape(field)}.uri, "
        f"{re.escape(field)}.endpoint and the credentials; the trainer's log has the "
        "store's answer",
        text,
    ), text
    assert_nothing_remote(text)
    assert SECRET in caplog.text and "InternalSaysNo" in caplog.text


@pytest.mark.parametrize("path", PATHS)
def test_a_known_error_code_is_told_without_the_store_s_message(
    s3_env: None, tmp_path: Path, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    with answering(403, ACCESS_DENIED) as endpoint:
        error = fail_at(path, endpoint, tmp_path)
    text = status_text(error)
    field = f"{FIELD[path]}.s3"
    assert isinstance(error, InvalidConfig)  # a refusal: exit 78, not retried
    assert re.fullmatch(
        f"{re.escape(field)}: the {FIRST_REQUEST[path]} was refused \\(AccessDenied\\): access "
        "denied; check the bucket name and what the credentials may do: "
        f"{re.escape(field)}.credentialsSecretRef \\(FTO_S3_{FIELD[path].upper()}_\\* in the "
        "pod\\), or the pod's cloud identity if it has none, and what the bucket policy "
        "grants them",
        text,
    ), text
    assert_nothing_remote(text)
    assert SECRET in caplog.text


def test_the_log_keeps_the_details_bounded(
    s3_env: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    huge = (
        "<?xml version='1.0'?><Error><Code>InternalSaysNo</Code><Message>"
        + SECRET * 20_000
        + "</Message></Error>"
    ).encode()
    with answering(500, huge) as endpoint:
        error = fail_at("output write probe", endpoint, tmp_path)
    assert_nothing_remote(status_text(error))
    assert SECRET in caplog.text
    assert max(len(record.getMessage()) for record in caplog.records) < DETAILS_LIMIT + 500


# --- (b) no answer: one sentence, whatever the reason ---------------------------------------


def test_every_way_of_getting_no_answer_reads_the_same(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A closed port, a port that never answers, a host that does not resolve, and an
    HTTP service that is not S3: the same sentence, the same kind of error (retried)."""
    caplog.set_level(logging.INFO, logger="finetune_trainer")
    texts = {}
    for name, remote in [
        ("closed port", closed_port()),
        ("silent port", silent_port()),
        ("unresolvable host", unresolvable()),
        ("http service", answering(403, PLAIN)),
    ]:
        with remote as endpoint:
            with pytest.raises(RemoteFailure) as caught:
                short_timeout_store(endpoint).put_json("runs/a/x", {})
            assert failure_summary(caught.value) == str(caught.value)
            texts[name] = str(caught.value).replace(endpoint, "<endpoint>")
            if name == "unresolvable host":
                assert "http://no-such-store.invalid:9000" in str(caught.value)
    assert set(texts.values()) == {
        "output.s3.endpoint: could not get an answer from <endpoint> (unreachable, refused "
        "or not an S3 endpoint) to the write of s3://bucket/runs/a/x; check the endpoint and "
        "that the pod may reach it"
    }, texts
    # The log tells them apart, for whoever reads the pod's logs.
    assert "Could not connect" in caplog.text and "Read timeout" in caplog.text


# --- (c) wrong credentials against the real S3 server ---------------------------------------


@pytest.mark.parametrize(
    "which, code, sentence",
    [
        (
            "secret",
            "SignatureDoesNotMatch",
            "the secret access key does not match the access key id; check the secret access "
            "key in",
        ),
        (
            "key id",
            "XAdminUserNotFound",
            "the store knows no such access key id; check the access key id in",
        ),
    ],
)
def test_wrong_credentials_name_the_fix_without_the_server_s_message(
    s3_server: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    which: str,
    code: str,
    sentence: str,
) -> None:
    bucket = s3_server.create_bucket(f"creds-{uuid.uuid4().hex[:10]}")
    key_id = s3_server.access_key if which == "secret" else "AKNOSUCHKEY0000000000"
    secret = "wrong-" + s3_server.secret_key
    # What the server says, to be sure it does not come back.
    raw = s3_server.client(aws_access_key_id=key_id, aws_secret_access_key=secret)
    with pytest.raises(Exception) as answered:
        raw.put_object(Bucket=bucket, Key="k", Body=b"x")
    server_says = answered.value.response["Error"]["Message"]
    assert answered.value.response["Error"]["Code"] == code

    monkeypatch.setenv("FTO_S3_MODEL_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("FTO_S3_MODEL_SECRET_ACCESS_KEY", secret)
    spec = TrainerConfig.from_mapping(
        {
            "model": {
                "s3": {
                    "uri": f"s3://{bucket}/models/m",
                    "endpoint": s3_server.endpoint,
                    "region": s3_server.region,
                }
            }
        }
    ).model
    with pytest.raises(InvalidConfig) as refused:
        resolve_model(spec, tmp_path)
    text = str(refused.value)
    assert text == (
        f"model.s3: the listing of s3://{bucket}/models/m/ was refused ({code}): {sentence} "
        "model.s3.credentialsSecretRef (FTO_S3_MODEL_* in the pod), or the pod's cloud "
        "identity if it has none"
    )
    assert server_says not in text and secret not in text


# --- (d) the real command line --------------------------------------------------------------


@pytest.mark.parametrize(
    "body, code, status, reason",
    [
        (PLAIN, ExitCode.FAILED, "failed", "TrainingFailed"),
        (ACCESS_DENIED, ExitCode.INVALID_INPUT, "invalid_input", "InvalidConfig"),
    ],
    ids=["plain-body", "access-denied-document"],
)
def test_the_cli_against_an_http_service_tells_only_the_trainer_s_words(
    tmp_path: Path,
    tiny_model_dir: Path,
    tiny_dataset_path: Path,
    body: bytes,
    code: int,
    status: str,
    reason: str,
) -> None:
    """finetune-train as the container runs it, with output.s3 pointing at an HTTP service
    that answers 403 with a secret: the exit code and the termination file."""
    with answering(403, body) as endpoint:
        config = write_config(
            tmp_path / "config.yaml",
            {
                "model": {"path": str(tiny_model_dir)},
                "dataset": {"path": str(tiny_dataset_path)},
                "output": {"s3": location(endpoint, "runs/a")},
                "training": {"maxSteps": 1},
            },
        )
        env = cli_env(
            tmp_path,
            FTO_S3_OUTPUT_ACCESS_KEY_ID="AKIDEXAMPLE",
            FTO_S3_OUTPUT_SECRET_ACCESS_KEY="not-a-secret",
        )
        result = run_cli(["--config", str(config)], env, timeout=180)
    assert result.returncode == code, result.stderr[-3000:]
    raw = (tmp_path / "termination-log").read_text(encoding="utf-8")
    written = json.loads(raw)
    assert (written["status"], written["reason"]) == (status, reason)
    probe = FIRST_REQUEST["output write probe"]
    if reason == "TrainingFailed":
        expected = re.escape(s3_unreachable("output.s3", endpoint, "@")).replace("@", probe)
    else:
        expected = f"output\\.s3: the {probe} was refused \\(AccessDenied\\): access denied; .*"
    assert re.fullmatch(expected, written["message"]), written["message"]
    assert_nothing_remote(raw)
    # The pod's log has what the service answered.
    assert ("Forbidden" if body is PLAIN else SECRET) in result.stderr


# --- the Hugging Face Hub -------------------------------------------------------------------

_HUB_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from finetune_api.config import DatasetSpec, ModelSpec
    from finetune_trainer.data import load_rows
    from finetune_trainer.errors import InvalidInput
    from finetune_trainer.model_errors import load_tokenizer
    from finetune_trainer.remote_errors import failure_summary
    from finetune_trainer.sources import ModelSource

    def text(exc):
        return str(exc) if isinstance(exc, InvalidInput) else failure_summary(exc)

    out = {}
    try:
        load_tokenizer(ModelSpec(name="acme/model"), ModelSource("acme/model", None, False,
                       "Hub model acme/model"), None)
    except Exception as exc:
        out["model"] = [type(exc).__name__, text(exc)]
    try:
        load_rows(DatasetSpec(name="acme/data"), None, cache_dir=sys.argv[1])
    except Exception as exc:
        out["dataset"] = [type(exc).__name__, text(exc)]
    print(json.dumps(out))
    """
)


def test_a_hub_that_answers_403_with_a_secret_is_named_by_its_documented_status(
    tmp_path: Path,
) -> None:
    """HF_ENDPOINT at an HTTP service answering 403 and a secret: the model's and the
    dataset's messages name the field and the status the Hub documents, nothing it said.
    (A fresh interpreter: the Hub libraries read HF_ENDPOINT at import.)"""
    with answering(403, PLAIN) as endpoint:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "FTO_", "AWS_"))}
        env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_XET="1")
        done = subprocess.run(
            [sys.executable, "-c", _HUB_SCRIPT, str(tmp_path / "cache")],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO,
            check=True,
        )
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["model"] == [
        "RemoteFailure",
        "model.name acme/model: the Hub denied access (HTTP 403); check that the account of "
        "model.tokenSecretRef may read it",
    ]
    assert out["dataset"] == [
        "RemoteFailure",
        "dataset.name acme/data: the Hub denied access (HTTP 403); check that the account of "
        "HF_TOKEN may read it",
    ]
    for _, text in out.values():
        assert_nothing_remote(text)


# --- unexpected failures -------------------------------------------------------------------


def test_an_unexpected_failure_with_a_remote_error_behind_it_says_only_that(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A library that wraps the store's answer into its own error text: the summary is one
    fixed sentence (even the error's type would tell how the request failed); the log has
    the traceback."""
    from botocore.exceptions import ClientError

    from finetune_trainer.runtime import RuntimeOptions
    from finetune_trainer.train import TrainingRun

    def train(self: TrainingRun) -> Any:
        try:
            raise ClientError({"Error": {"Code": "InternalSaysNo", "Message": SECRET}}, "GetObject")
        except ClientError as exc:
            raise OSError(f"could not read the shard: {exc}") from exc

    monkeypatch.setattr(TrainingRun, "_train", train)
    run = TrainingRun(TrainerConfig.from_mapping({}), RuntimeOptions(scratch_dir=tmp_path))
    message = run.execute()
    assert (message.status, message.reason) == ("failed", "TrainingFailed")
    assert message.message == REMOTE_FALLBACK
    assert SECRET in caplog.text
