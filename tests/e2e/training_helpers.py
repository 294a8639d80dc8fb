"""Helpers for the end-to-end training tests: the tiny training spec, reading outputs on a
PV or S3 and checking their manifests independently of the trainer's own code, the
trainer's JSON step lines, and a watch that records every status the operator writes."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from finetune_api import GROUP, PLURAL, VERSION
from finetune_localcluster.cluster import LocalCluster
from finetune_localcluster.waiting import wait_for

INPUT_CLAIM = "inputs"
OUTPUT_CLAIM = "outputs"
MODEL_DIR = "tiny-gpt-oss"
DATASET_FILE = "multilingual-thinking-tiny.jsonl"
MAX_STEPS = 12
# The model's widths make one optimizer step take about half a second to a second on this
# 2-core machine: slow enough that a test can act between the first checkpoint and the end
# of the run (delete the pod, suspend), fast enough that a whole run takes seconds.
MODEL_WIDTH = 256  # hidden size and expert width (the tiny preset has 64)


def training_spec(
    *,
    save_steps: int = 4,
    output: dict[str, Any] | None = None,
    lifecycle: dict[str, Any] | None = None,
    dataset_file: str = DATASET_FILE,
) -> dict[str, Any]:
    """A FineTuneJob spec that trains the tiny model for MAX_STEPS steps on CPU, reading the
    model and dataset from the `inputs` PVC and writing to the `outputs` PVC by default."""
    spec: dict[str, Any] = {
        "model": {"pvc": {"claimName": INPUT_CLAIM, "path": MODEL_DIR}, "maxSeqLength": 512},
        "dataset": {"pvc": {"claimName": INPUT_CLAIM, "path": dataset_file}, "maxSamples": 64},
        "lora": {"rank": 8, "alpha": 16},
        "training": {
            "maxSteps": MAX_STEPS,
            "perDeviceTrainBatchSize": 2,
            "gradientAccumulationSteps": 2,
            "learningRate": 5.0e-3,
            "warmupSteps": 2,
            "saveSteps": save_steps,
            "gradientCheckpointing": "off",
        },
        "output": output or {"pvc": {"claimName": OUTPUT_CLAIM}},
        "resources": {"gpus": 1, "cpu": "2", "memory": "4Gi"},
    }
    if lifecycle:
        spec["lifecycle"] = lifecycle
    return spec


S3_CREDENTIALS_SECRET = "s3-credentials"


def apply_s3_credentials(kubectl: Any, server: Any) -> str:
    """The local S3 server's keys as the Secret an S3 location's credentialsSecretRef
    names (the keys it defaults to), applied through stdin so the values are on no command
    line; returns the Secret's name. ``kubectl`` is a FineTuneJobs' kubectl."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": S3_CREDENTIALS_SECRET},
        "stringData": {
            "AWS_ACCESS_KEY_ID": server.access_key,
            "AWS_SECRET_ACCESS_KEY": server.secret_key,
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(secret))
    return S3_CREDENTIALS_SECRET


def host_path(uri: str, claims: dict[str, Path]) -> Path:
    """pvc://claim/path -> the directory of that claim's PV on this machine."""
    assert uri.startswith("pvc://"), f"not a PVC URI: {uri}"
    claim, _, rest = uri.removeprefix("pvc://").partition("/")
    return claims[claim] / rest


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_manifest_dir(directory: Path) -> dict[str, Any]:
    """Read ``manifest.json`` and recompute the size and sha256 of every file it lists;
    returns the manifest. Fails naming the first file that does not match."""
    manifest_path = directory / "manifest.json"
    assert manifest_path.is_file(), f"no manifest.json in {directory}"
    manifest: dict[str, Any] = json.loads(manifest_path.read_text())
    assert manifest["files"], f"{manifest_path} lists no files"
    for entry in manifest["files"]:
        data = (directory / entry["path"]).read_bytes()
        assert len(data) == entry["size"], f"{directory}/{entry['path']}: size differs"
        assert sha256_bytes(data) == entry["sha256"], f"{directory}/{entry['path']}: sha256"
    return manifest


def check_manifest_s3(s3: Any, bucket: str, prefix: str) -> dict[str, Any]:
    """The same check for an artifact under s3://bucket/prefix/."""
    body = s3.get_object(Bucket=bucket, Key=f"{prefix}/manifest.json")["Body"].read()
    manifest: dict[str, Any] = json.loads(body)
    assert manifest["files"], f"s3://{bucket}/{prefix}/manifest.json lists no files"
    for entry in manifest["files"]:
        key = f"{prefix}/{entry['path']}"
        data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert len(data) == entry["size"], f"s3://{bucket}/{key}: size differs"
        assert sha256_bytes(data) == entry["sha256"], f"s3://{bucket}/{key}: sha256 differs"
    return manifest


def split_s3_uri(uri: str) -> tuple[str, str]:
    """s3://bucket/some/prefix -> ("bucket", "some/prefix")."""
    assert uri.startswith("s3://"), f"not an S3 URI: {uri}"
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    return bucket, prefix.strip("/")


def trainer_steps(log: str) -> list[int]:
    """The optimizer steps a trainer ran, from the one JSON line per step it prints."""
    steps = []
    for line in log.splitlines():
        # A progress bar (stderr, same file) may precede it on the line; the JSON line is
        # one write that ends the line. The termination message also holds '{"step":'.
        start = line.find('{"step": ')
        if start < 0:
            continue
        try:
            record = json.loads(line[start:])
        except ValueError:
            continue
        if "total_steps" in record:
            steps.append(int(record["step"]))
    return steps


def complete_checkpoints(output_dir: Path) -> list[int]:
    """Steps of the checkpoints under a PVC output directory that have their manifest."""
    return sorted(
        int(path.parent.name.removeprefix("checkpoint-"))
        for path in output_dir.glob("**/checkpoint-*/manifest.json")
    )


def check_run_times(status: dict[str, Any]) -> None:
    """A finished FineTuneJob says when its run started and when it ended, in that order."""
    start, end = status.get("startTime"), status.get("completionTime")
    assert start and end, f"startTime {start!r}, completionTime {end!r} in {status}"
    assert datetime.fromisoformat(start) <= datetime.fromisoformat(end), (start, end)


def pods_oldest_first(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(pods, key=lambda p: p["metadata"]["creationTimestamp"])


def pod_phase(pod: dict[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase") or "")


class StatusHistory:
    """Every status of one FineTuneJob the API server stores, in order, collected by a watch
    in a background thread (polling could miss a short-lived phase such as Pending).

    with StatusHistory(cluster, namespace, name) as history:
        ...
    history.statuses  # list of status dicts, oldest first
    """

    def __init__(self, cluster: LocalCluster, namespace: str, name: str) -> None:
        self.namespace = namespace
        self.name = name
        self.statuses: list[dict[str, Any]] = []
        self._api_client = cluster.api_client()
        self._objects = client.CustomObjectsApi(self._api_client)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{name}", daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> StatusHistory:
        # List first, so the watch starts at a known version and misses no change.
        listed = self._list()
        self._version = listed["metadata"]["resourceVersion"]
        for item in listed["items"]:
            self.statuses.append(item.get("status") or {})
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._api_client.close()

    def _list(self) -> dict[str, Any]:
        result: dict[str, Any] = self._objects.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, field_selector=f"metadata.name={self.name}"
        )
        return result

    def _events(self) -> Iterator[dict[str, Any]]:
        stream = watch.Watch().stream(
            self._objects.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            field_selector=f"metadata.name={self.name}",
            resource_version=self._version,
            # Short server-side timeouts so the thread notices the stop flag quickly.
            timeout_seconds=2,
        )
        yield from stream

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    for event in self._events():
                        body = event["object"]
                        self._version = body["metadata"]["resourceVersion"]
                        if event["type"] in ("ADDED", "MODIFIED"):
                            self.statuses.append(body.get("status") or {})
                except ApiException as error:
                    if error.status != 410:
                        raise
                    raise AssertionError("the status watch expired; changes were missed") from error
        except BaseException as error:  # reported by the test that reads the history
            self.error = error

    def wait_for_phase(self, phase: str, timeout: float = 30) -> None:
        """Wait until the watch has delivered a status with ``phase`` (a GET may see it a
        moment before the watch event arrives)."""
        wait_for(
            lambda: self.error is not None or any(s.get("phase") == phase for s in self.statuses),
            timeout=timeout,
            message=f"the watch to deliver phase {phase}",
        )
        self._raise_error()

    def phases(self) -> list[str]:
        """The phases seen, consecutive repeats collapsed."""
        self._raise_error()
        seen: list[str] = []
        for status in self.statuses:
            phase = status.get("phase")
            if phase and (not seen or seen[-1] != phase):
                seen.append(phase)
        return seen

    def running_steps(self) -> list[int]:
        """The distinct progress.step values written while the phase was Running, in order."""
        self._raise_error()
        steps: list[int] = []
        for status in self.statuses:
            step = (status.get("progress") or {}).get("step")
            if status.get("phase") == "Running" and step is not None and step not in steps:
                steps.append(int(step))
        return steps

    def _raise_error(self) -> None:
        if self.error is not None:
            raise AssertionError(f"the status watch failed: {self.error!r}")


def generate_with_adapter(model_dir: Path, adapter_dir: Path, new_tokens: int = 4) -> list[int]:
    """Load the base model, apply the trained LoRA adapter with PEFT, check that it changes
    the model's output, and greedily generate ``new_tokens`` tokens; returns their ids."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))
    base: Any = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    base.eval()
    prompt: Any = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    input_ids = prompt["input_ids"]
    with torch.no_grad():
        base_logits = base(input_ids).logits
    tuned: Any = PeftModel.from_pretrained(base, str(adapter_dir))
    tuned.eval()
    with torch.no_grad():
        tuned_logits = tuned(input_ids).logits
        generated: Any = tuned.generate(
            input_ids,
            attention_mask=prompt["attention_mask"],
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
        )
    # A zero (untrained) LoRA update would leave the logits exactly as the base model's.
    assert not torch.allclose(base_logits, tuned_logits), "the adapter changes nothing"
    new_ids: list[int] = generated[0, input_ids.shape[1] :].tolist()
    return new_ids
