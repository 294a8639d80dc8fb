"""Who a run is, for experiment trackers: its name and tags, from the FineTuneJob the
operator names in the pod's environment (contract.Env.JOB_NAMESPACE, JOB_NAME, RUN_ID)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from finetune_api.contract import Env

TAG_NAMESPACE = "finetune.dev/namespace"
TAG_NAME = "finetune.dev/name"
TAG_UID = "finetune.dev/uid"
TAG_FINGERPRINT = "finetune.dev/config-fingerprint"
# Outside Kubernetes (no FineTuneJob): the experiment, project and run name.
LOCAL_NAMESPACE = "finetune"


@dataclass(frozen=True)
class RunIdentity:
    namespace: str
    name: str
    uid: str | None  # the FineTuneJob's uid; None outside Kubernetes

    @classmethod
    def from_env(cls, fallback_name: str) -> RunIdentity:
        namespace = os.environ.get(Env.JOB_NAMESPACE, "").strip()
        name = os.environ.get(Env.JOB_NAME, "").strip()
        if namespace and name:
            uid = os.environ.get(Env.RUN_ID, "").strip() or None
            return cls(namespace=namespace, name=name, uid=uid)
        return cls(namespace=LOCAL_NAMESPACE, name=fallback_name, uid=None)

    @property
    def run_name(self) -> str:
        return f"{self.namespace}/{self.name}"

    def tags(self, fingerprint: str) -> dict[str, str]:
        tags = {TAG_NAMESPACE: self.namespace, TAG_NAME: self.name, TAG_FINGERPRINT: fingerprint}
        if self.uid:
            tags[TAG_UID] = self.uid
        return tags
