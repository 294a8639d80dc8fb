"""Test helpers for FineTuneJobs on the local cluster: create, read, wait."""

from __future__ import annotations

import json
from typing import Any

import yaml

from finetune_localcluster.cluster import LocalCluster
from finetune_localcluster.waiting import WaitTimeout, wait_for
from finetune_operator.naming import LABEL_OWNER_UID


class FineTuneJobs:
    def __init__(self, cluster: LocalCluster, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> Any:
        return self.cluster.kubectl(["-n", self.namespace, *args], check=check, input=input)

    def manifest(self, name: str, spec: dict[str, Any]) -> str:
        return yaml.safe_dump(
            {
                "apiVersion": "finetune.dev/v1alpha1",
                "kind": "FineTuneJob",
                "metadata": {"name": name, "namespace": self.namespace},
                "spec": spec,
            }
        )

    def apply(self, name: str, spec: dict[str, Any], check: bool = True) -> Any:
        return self.kubectl("apply", "-f", "-", input=self.manifest(name, spec), check=check)

    def get(self, name: str) -> dict[str, Any]:
        out = self.kubectl("get", "finetunejob", name, "-o", "json").stdout
        result: dict[str, Any] = json.loads(out)
        return result

    def status(self, name: str) -> dict[str, Any]:
        return self.get(name).get("status") or {}

    def patch(self, name: str, patch: dict[str, Any], check: bool = True) -> Any:
        return self.kubectl(
            "patch", "finetunejob", name, "--type", "merge", "-p", json.dumps(patch), check=check
        )

    def wait_status(self, name: str, predicate: Any, timeout: float = 60, what: str = "") -> Any:
        """Wait until predicate(status) holds; returns the status."""

        seen: list[Any] = []

        def check() -> Any:
            status = self.status(name)
            seen[:] = [status]
            return status if predicate(status) else None

        try:
            return wait_for(check, timeout=timeout, interval=0.5, message=what or f"{name} status")
        except WaitTimeout as timeout_error:
            # The last status read says what the operator had written instead.
            last = seen[-1] if seen else None
            raise WaitTimeout(f"{timeout_error}; last status: {last!r}") from None

    def wait_phase(self, name: str, phase: str, timeout: float = 60) -> dict[str, Any]:
        result: dict[str, Any] = self.wait_status(
            name, lambda s: s.get("phase") == phase, timeout, f"{name} to be {phase}"
        )
        return result

    def jobs(self, name: str) -> list[dict[str, Any]]:
        return self.jobs_by_uid(self.get(name)["metadata"]["uid"])

    def jobs_by_uid(self, uid: str) -> list[dict[str, Any]]:
        out = self.kubectl("get", "jobs", "-l", f"{LABEL_OWNER_UID}={uid}", "-o", "json").stdout
        items: list[dict[str, Any]] = json.loads(out)["items"]
        return items

    def pods(self, uid: str) -> list[dict[str, Any]]:
        out = self.kubectl("get", "pods", "-l", f"{LABEL_OWNER_UID}={uid}", "-o", "json").stdout
        items: list[dict[str, Any]] = json.loads(out)["items"]
        return items

    def reasons(self, name: str, *wanted: str, timeout: float = 15) -> dict[str, int]:
        """Event reasons on the FineTuneJob with their counts, once every ``wanted`` reason
        is among them (the operator posts Events from a thread of its own, a moment after
        the status they announce)."""

        def counted() -> dict[str, int] | None:
            counts: dict[str, int] = {}
            for event in self.events(name):
                counts[event["reason"]] = counts.get(event["reason"], 0) + event.get("count", 1)
            return counts if set(wanted) <= set(counts) else None

        found: dict[str, int] = wait_for(
            counted, timeout=timeout, interval=0.3, message=f"Events {wanted} on {name}"
        )
        return found

    def events(self, name: str) -> list[dict[str, Any]]:
        out = self.kubectl(
            "get",
            "events",
            "--field-selector",
            f"involvedObject.kind=FineTuneJob,involvedObject.name={name}",
            "-o",
            "json",
        ).stdout
        items: list[dict[str, Any]] = json.loads(out)["items"]
        return items
