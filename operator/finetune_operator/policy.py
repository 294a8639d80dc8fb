"""What a FineTuneJob may choose that the cluster's administrators may restrict.

Whoever can create a FineTuneJob picks the trainer's image and ServiceAccount, so by
default that right is as strong as creating pods in the namespace: the image's code runs
with the pod's Secrets, volumes and cloud identity. Platforms that grant FineTuneJob
rights more widely than pod rights narrow it here (FTO_ALLOWED_IMAGES,
FTO_ALLOWED_SERVICE_ACCOUNTS); the operator's own defaults are always allowed.
"""

from __future__ import annotations

from .api.spec import FineTuneJobSpec
from .config import OperatorConfig


def image_allowed(image: str, allowed: tuple[str, ...]) -> bool:
    """An entry ending in "/" allows every image below that path; any other entry is one
    repository, at any tag or digest (so ``r/trainer`` does not allow ``r/trainer-x``)."""
    for entry in allowed:
        if entry.endswith("/"):
            if image.startswith(entry):
                return True
        elif image == entry or image.startswith((entry + ":", entry + "@")):
            return True
    return False


def policy_problems(spec: FineTuneJobSpec, config: OperatorConfig) -> list[str]:
    """Each choice the operator's settings do not allow, naming the field and the fix."""
    problems = []
    images = (config.trainer_image, *config.allowed_images)
    if spec.image and config.allowed_images and not image_allowed(spec.image, images):
        problems.append(
            f"spec.image: {spec.image} is not allowed in this cluster; leave it unset for "
            f"the default trainer image or use one of: {', '.join(config.allowed_images)}"
        )
    account = spec.service_account_name
    accounts = (config.trainer_service_account, *config.allowed_service_accounts)
    if account and config.allowed_service_accounts and account not in accounts:
        problems.append(
            f"spec.serviceAccountName: {account} is not allowed in this cluster; leave it "
            f"unset or use one of: {', '.join(config.allowed_service_accounts)}"
        )
    return problems
