"""A real S3-compatible server for tests: the versitygw gateway (built from Go modules by
build-binaries.sh) with its posix backend on a temporary directory, listening on
127.0.0.1 at a free port, with freshly generated root credentials."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from finetune_localcluster.binaries import Binaries, find_binaries
from finetune_localcluster.ports import free_port
from finetune_localcluster.processes import ManagedProcess

log = logging.getLogger(__name__)

REGION = "us-east-1"


class S3ServerError(RuntimeError):
    """The gateway did not start; the message carries its log tail."""


class S3Server:
    """versitygw on loopback. After start(): `endpoint` (http://127.0.0.1:PORT),
    `access_key`, `secret_key`, `region`, and `data_dir` (buckets are its subdirectories).

    Credentials reach the gateway through its environment, never its command line."""

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        binaries: Binaries | None = None,
        start_timeout: float = 30.0,
        iam: bool = False,
    ) -> None:
        self._owns_dir = data_dir is None
        self.base_dir = Path(data_dir or tempfile.mkdtemp(prefix="localcluster-s3-")).resolve()
        self.data_dir = self.base_dir / "buckets"
        self._binaries = binaries
        self.start_timeout = start_timeout
        self.access_key = "AK" + secrets.token_hex(9).upper()
        self.secret_key = secrets.token_urlsafe(30)
        self.region = REGION
        self.port = 0
        # With iam: versitygw's internal IAM (users besides root, bucket policies), managed
        # through its admin endpoint; create_user() adds a user.
        self.iam = iam
        self.admin_port = 0
        self._process: ManagedProcess | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> S3Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the gateway and wait until it answers S3 requests."""
        binaries = self._binaries or find_binaries()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(3):
            self.port = free_port()
            iam_args: list[str] = []
            if self.iam:
                self.admin_port = free_port()
                (self.base_dir / "iam").mkdir(exist_ok=True)
                iam_args = [
                    f"--admin-port=127.0.0.1:{self.admin_port}",
                    f"--iam-dir={self.base_dir / 'iam'}",
                ]
            env = {
                "PATH": os.environ.get("PATH", os.defpath),
                "ROOT_ACCESS_KEY_ID": self.access_key,
                "ROOT_SECRET_ACCESS_KEY": self.secret_key,
            }
            self._process = ManagedProcess(
                "versitygw",
                [
                    str(binaries.versitygw),
                    f"--port=127.0.0.1:{self.port}",
                    *iam_args,
                    f"--region={self.region}",
                    "--quiet",
                    "posix",
                    str(self.data_dir),
                ],
                self.base_dir / "versitygw.log",
                env=env,
            )
            self._process.start()
            if self._wait_ready():
                log.info("S3 server ready at %s (data %s)", self.endpoint, self.data_dir)
                return
            tail = self._process.log_tail()
            self._process.stop()
            if "address already in use" not in tail or attempt == 2:
                raise S3ServerError(f"versitygw did not start:\n{tail}")

    def _wait_ready(self) -> bool:
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if not self._process.running():
                return False
            try:
                # Unauthenticated: any HTTP answer (403) proves the S3 API is serving.
                urllib.request.urlopen(self.endpoint + "/", timeout=1).close()
                return True
            except urllib.error.HTTPError:
                return True
            except OSError:
                time.sleep(0.1)
        return False

    def stop(self) -> None:
        """Stop the gateway and remove the data unless the caller owns the directory."""
        if self._process is not None:
            self._process.stop()
            self._process = None
        if self._owns_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def client(self, **kwargs: Any) -> Any:
        """A boto3 S3 client for this server (path-style addressing)."""
        import boto3
        from botocore.config import Config

        options: dict[str, Any] = {
            "endpoint_url": self.endpoint,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "region_name": self.region,
            "config": Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
        }
        return boto3.client("s3", **{**options, **kwargs})

    def create_user(self) -> tuple[str, str]:
        """A new IAM user (server started with ``iam``) with no grants of its own; returns
        its (access key, secret key). The admin credentials travel in the admin tool's
        environment; the new user's, made up here for tests, on its command line."""
        assert self.iam and self.admin_port, "start the server with iam=True"
        access = "UK" + secrets.token_hex(8).upper()
        secret = secrets.token_urlsafe(24)
        subprocess.run(
            [
                str((self._binaries or find_binaries()).versitygw),
                "admin",
                f"--endpoint-url=http://127.0.0.1:{self.admin_port}",
                "create-user",
                f"--access={access}",
                f"--secret={secret}",
                "--role=user",
            ],
            env={
                "PATH": os.environ.get("PATH", os.defpath),
                "ADMIN_ACCESS_KEY_ID": self.access_key,
                "ADMIN_SECRET_ACCESS_KEY": self.secret_key,
            },
            check=True,
            capture_output=True,
            timeout=30,
        )
        return access, secret

    def create_bucket(self, name: str) -> str:
        """Create a bucket (idempotent) and return its name."""
        s3 = self.client()
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=name)
        return name

    def env(self) -> dict[str, str]:
        """AWS-style environment variables for a process that talks to this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }
