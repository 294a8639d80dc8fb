"""What a FineTuneJob may reach, as the cluster's administrators allow it.

Whoever can create a FineTuneJob picks the trainer's image and ServiceAccount, the S3
endpoints its credentials are sent to, its priority and the taints it tolerates. Left open,
that right is as strong as creating pods in the namespace, and stronger in one way: the
operator, not the user, talks to the endpoints. So some choices are refused by default and
the rest can be narrowed (chart ``trainer.allowed*``, ``FTO_ALLOWED_*``):

- S3 endpoints on loopback, link-local addresses (cloud metadata services live there), the
  unspecified address, and the Kubernetes API server's own names are refused unless listed;
  with a list, only listed endpoints pass.
- Priority classes named ``system-*`` (node- and cluster-critical) are refused unless
  listed; with a list, only listed classes pass.
- A toleration without a key (it tolerates every taint, control-plane nodes included) is
  refused unless allowed.
- Images and ServiceAccounts pass when unlisted lists are empty; with a list, only listed
  ones (and the operator's own defaults) pass.

The same rules run at admission in the chart's ValidatingAdmissionPolicy
(templates/admission-policy.yaml); this copy covers clusters that do not install it, and
FineTuneJobs created before it was installed.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

from .api.spec import FineTuneJobSpec
from .config import OperatorConfig

# Cloud metadata services by name; their addresses are link-local and refused as such.
_METADATA_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.internal",
    }
)
# The Kubernetes API server, as pods reach it.
_API_SERVER_NAMES = frozenset(
    {
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    }
)
# AWS's IPv6 metadata address is a unique-local one, not link-local.
_AWS_METADATA_V6 = ipaddress.ip_address("fd00:ec2::254")
# Forms of IPv4 address that name resolvers accept beyond the dotted quad (2852039166,
# 0xa9fea9fe, 0251.0376.0251.0376, 169.254.43518): they must be read as the address.
_LEGACY_IPV4 = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$")


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """(repository, tag, digest) of an image reference. A ``:`` before the last ``/`` is a
    registry's port, not a tag."""
    name, _, digest = image.partition("@")
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1 :], digest or None
    return name, None, digest or None


def image_allowed(image: str, allowed: tuple[str, ...]) -> bool:
    """An entry ending in ``/`` allows every repository below that path; an entry with a
    tag or digest allows exactly that reference (a tag entry does not admit the same tag
    with any digest, which is what would be pulled); any other entry allows its repository
    at any tag or digest."""
    repository, _, _ = split_image(image)
    for entry in allowed:
        if entry.endswith("/"):
            if repository.startswith(entry):
                return True
            continue
        _, tag, digest = split_image(entry)
        if tag is not None or digest is not None:
            if image == entry:
                return True
        elif repository == entry:
            return True
    return False


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _LEGACY_IPV4.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _refused_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_loopback
        or address.is_link_local
        or address.is_unspecified
        or address == _AWS_METADATA_V6
    )


def _split_entry(entry: str) -> tuple[str, int | None]:
    """An allowed-endpoint entry: ``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or
    ``*.suffix`` (any port unless one is given)."""
    entry = entry.strip().lower()
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif entry.count(":") == 1:
        host, _, port = entry.partition(":")
    else:
        host, port = entry, ""
    return host.rstrip("."), int(port) if port.isdigit() else None


def _endpoint_listed(host: str, port: int | None, allowed: tuple[str, ...]) -> bool:
    for entry in allowed:
        name, entry_port = _split_entry(entry)
        if entry_port is not None and port != entry_port:
            continue
        if host == name or (name.startswith("*.") and host.endswith(name[1:])):
            return True
    return False


def endpoint_problem(endpoint: str, allowed: tuple[str, ...]) -> str | None:
    """Why a FineTuneJob may not send S3 requests (signed with its credentials) to
    ``endpoint``, or None."""
    try:
        parts = urlsplit(endpoint)
        port = parts.port
    except ValueError:
        return "is not a valid URL"
    host = (parts.hostname or "").rstrip(".")
    if allowed:
        if _endpoint_listed(host, port, allowed):
            return None
        return f"is not one of the S3 endpoints allowed in this cluster: {', '.join(allowed)}"
    address = _address(host)
    if address is not None and _refused_address(address):
        return (
            "is a loopback, link-local or unspecified address (cloud metadata services "
            "live there), which FineTuneJobs may not reach"
        )
    if host == "localhost" or host.endswith(".localhost") or host in _METADATA_NAMES:
        return "names this machine or a cloud metadata service, which FineTuneJobs may not reach"
    if host in _API_SERVER_NAMES:
        return "is the Kubernetes API server, not an S3 endpoint"
    return None


def _endpoints(spec: FineTuneJobSpec) -> list[tuple[str, str]]:
    found = []
    for field, location in (
        ("spec.model.s3.endpoint", spec.model.s3),
        ("spec.dataset.s3.endpoint", spec.dataset.s3),
        ("spec.output.s3.endpoint", spec.output.s3),
    ):
        if location is not None and location.endpoint:
            found.append((field, location.endpoint))
    return found


def policy_problems(spec: FineTuneJobSpec, config: OperatorConfig) -> list[str]:
    """Each choice the cluster's policy does not allow, naming the field and the fix."""
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
    for field, endpoint in _endpoints(spec):
        problem = endpoint_problem(endpoint, config.allowed_s3_endpoints)
        if problem:
            problems.append(f"{field}: {endpoint} {problem}")
    priority = spec.scheduling.priority_class_name
    if priority:
        listed = config.allowed_priority_classes
        if listed and priority not in listed:
            problems.append(
                f"spec.scheduling.priorityClassName: {priority} is not allowed in this "
                f"cluster; leave it unset or use one of: {', '.join(listed)}"
            )
        elif not listed and priority.startswith("system-"):
            problems.append(
                f"spec.scheduling.priorityClassName: {priority} is reserved for the "
                "cluster's own components; leave it unset or use one of the cluster's "
                "priority classes for workloads"
            )
    if not config.allow_wildcard_tolerations:
        for index, toleration in enumerate(spec.scheduling.tolerations or []):
            if not toleration.key:
                problems.append(
                    f"spec.scheduling.tolerations[{index}]: a toleration without a key "
                    "tolerates every taint (control-plane and reserved nodes included) and "
                    "is not allowed in this cluster; name the taint's key"
                )
    return problems
