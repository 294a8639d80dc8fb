"""Names and labels of the objects the operator creates for a FineTuneJob.

Child names are derived from the FineTuneJob's name and uid, so a handler that runs twice
(or an operator restarted mid-way) always finds the object it made instead of making a
second one, and a FineTuneJob recreated under the same name gets fresh children.
"""

from __future__ import annotations

import hashlib

from finetune_api import GROUP

MANAGED_BY = "finetune-operator"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_OWNER = f"{GROUP}/finetunejob"  # the FineTuneJob's name, to find children by label
LABEL_OWNER_UID = f"{GROUP}/finetunejob-uid"
LABEL_KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
ANNOTATION_CONFIG_HASH = f"{GROUP}/config-hash"
# On the trainer pod: the trainer's config file, mounted through the downward API.
ANNOTATION_TRAINER_CONFIG = f"{GROUP}/trainer-config"
TRAINER_CONTAINER = "trainer"

# The CRD caps FineTuneJob names at 52 characters so that name-<8 hex> fits the 63
# characters a Job name may have (its pods' job-name label must fit a label value).
MAX_OWNER_NAME = 52


# The labels every child carries (child_labels), as a server-side label selector: the
# operator lists and watches only its own Jobs and pods.
CHILD_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_OWNER}"


def child_name(name: str, uid: str) -> str:
    """The Job's name: the FineTuneJob's name plus a hash of its uid."""
    suffix = hashlib.sha256(uid.encode()).hexdigest()[:8]
    return f"{name[:MAX_OWNER_NAME].rstrip('-.')}-{suffix}"


def child_labels(name: str, uid: str) -> dict[str, str]:
    """Labels on every child; LABEL_OWNER lets the operator watch only its own objects."""
    return {
        LABEL_NAME: "finetune-trainer",
        LABEL_COMPONENT: "trainer",
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_OWNER: name,
        LABEL_OWNER_UID: uid,
    }


def default_output_path(namespace: str, name: str, uid: str) -> str:
    """Where a PVC output goes when the spec gives no path: unique per FineTuneJob, so two
    runs (or a recreated FineTuneJob of the same name) never resume each other's checkpoints."""
    return f"{namespace}/{name}-{uid[:8]}"
