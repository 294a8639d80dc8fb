"""The FineTuneJob a child object belongs to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from finetune_api import API_VERSION, KIND

from ..naming import child_labels, child_name


@dataclass(frozen=True)
class Owner:
    """Identity of a FineTuneJob: enough to name, label and own its children."""

    name: str
    namespace: str
    uid: str

    @classmethod
    def from_body(cls, body: Any) -> Owner:
        meta = body["metadata"]
        return cls(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])

    @property
    def child_name(self) -> str:
        return child_name(self.name, self.uid)

    @property
    def labels(self) -> dict[str, str]:
        return child_labels(self.name, self.uid)

    def owner_reference(self) -> dict[str, Any]:
        """Controller reference: deleting the FineTuneJob garbage-collects the child."""
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def metadata(self, extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
        return {
            "name": self.child_name,
            "namespace": self.namespace,
            "labels": {**self.labels, **(extra_labels or {})},
            "ownerReferences": [self.owner_reference()],
        }
