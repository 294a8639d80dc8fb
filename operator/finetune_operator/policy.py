"""What a FineTuneJob may reach, as the cluster's administrators allow it.

Whoever can create a FineTuneJob picks the trainer's image and ServiceAccount, the S3
endpoints its credentials are sent to, its priority and the taints it tolerates. Left open,
that right is as strong as creating pods in the namespace, and stronger in one way: the
operator, not the user, talks to the endpoints. So some choices are refused by default and
the rest can be narrowed (chart ``trainer.allowed*``, ``FTO_ALLOWED_*``):

- S3 endpoints on loopback, link-local and cloud metadata addresses (in every form a
  resolver accepts, IPv4 inside IPv6 included), the unspecified address, and the
  Kubernetes API server's names and the address this operator reaches it at, are refused
  unless listed; with a list, only listed endpoints pass. A host that is neither a DNS name
  nor an IP address (``evil.com\\.minio.svc``: some URL parsers end the host at the
  backslash) is refused, listed or not.
- Priority classes named ``system-*`` (node- and cluster-critical) are refused unless
  listed; with a list, only listed classes pass.
- A toleration without a key (it tolerates every taint, control-plane nodes included) is
  refused unless allowed, and so is one of a taint Kubernetes reserves: the control
  plane's (``node-role.kubernetes.io/*``), cordoned and unhealthy nodes'
  (``node.kubernetes.io/*``, which lets a pod onto a cordoned node), uninitialised nodes'
  (``node.cloudprovider.kubernetes.io/*``), ``CriticalAddonsOnly``, and the cluster
  autoscaler's marks on nodes it is removing, unless the key is listed.
  ``node.kubernetes.io/not-ready`` and ``unreachable`` pass as Kubernetes adds them to
  every pod, with effect NoExecute and a tolerationSeconds: that only sets how long the
  pod stays on a failed node.
- Images and ServiceAccounts pass when unlisted lists are empty; with a list, only listed
  ones (and the operator's own defaults) pass.

The same rules run at admission in the chart's ValidatingAdmissionPolicy
(templates/admission-policy.yaml); this copy covers clusters that do not install it, and
FineTuneJobs created before it was installed.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from urllib.parse import urlsplit

from finetune_api.safe_text import safe_text
from finetune_api.spec import FineTuneJobSpec, Toleration

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
# Cloud metadata addresses that are not link-local: AWS's IPv6 one (unique-local),
# Alibaba Cloud's and Oracle Cloud Classic's.
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("fd00:ec2::254", "100.100.100.200", "192.0.0.192")
)
# Deprecated ways of writing an IPv4 address as IPv6 (IPv4-compatible ::a.b.c.d and
# IPv4-translated ::ffff:0:a.b.c.d; IPv4-mapped ::ffff:a.b.c.d is ipv4_mapped): refused
# outright, as the admission policy's IP library does not read them either.
_IPV4_IN_IPV6 = (ipaddress.ip_network("::/96"), ipaddress.ip_network("::ffff:0:0:0/96"))
# NAT64's well-known prefix: 64:ff9b::a9fe:a9fe is 169.254.169.254 through the gateway.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# What a host may be when it is not an IP address: a DNS name. Anything else is read
# differently by different URL parsers (urllib3 ends the host at a backslash, Python's
# urlsplit does not), so an allowed suffix could pass a host that goes elsewhere.
_HOST_NAME = re.compile(r"^[a-z0-9._-]+$")
# Taints Kubernetes puts on nodes ordinary workloads stay off: the control plane's role
# (node-role.kubernetes.io/control-plane, the older .../master), cordoned, unhealthy and
# out-of-service nodes (node.kubernetes.io/unschedulable lets a pod onto a cordoned node),
# nodes the cloud provider has not initialised, nodes kept for critical add-ons, and nodes
# the cluster autoscaler is about to remove (a pod there would be killed within minutes).
_RESERVED_TAINT_PREFIXES = (
    "node-role.kubernetes.io/",
    "node.kubernetes.io/",
    "node.cloudprovider.kubernetes.io/",
)
_RESERVED_TAINT_KEYS = frozenset(
    {
        "CriticalAddonsOnly",
        "ToBeDeletedByClusterAutoscaler",
        "DeletionCandidateOfClusterAutoscaler",
    }
)
# Kubernetes gives every pod these, NoExecute for 300 seconds (DefaultTolerationSeconds):
# another tolerationSeconds only changes how long the pod stays on a failed node. Any other
# form (NoSchedule, or no tolerationSeconds) would schedule onto, or stay forever on,
# nodes that are not ready.
_EVICTION_DELAY_KEYS = frozenset({"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"})
# How much of a user's string a refusal quotes.
_QUOTE_LIMIT = 256
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


def _ipv4_inside(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64 or any(address in network for network in _IPV4_IN_IPV6):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _api_server_address() -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address this operator reaches the API server at (the ``kubernetes`` Service's
    ClusterIP, in a pod), which trainer pods reach it at too."""
    try:
        return ipaddress.ip_address(os.environ.get("KUBERNETES_SERVICE_HOST", "").strip())
    except ValueError:
        return None


def _address_problem(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, kind: str = "S3 endpoint"
) -> str | None:
    inside = _ipv4_inside(address) if isinstance(address, ipaddress.IPv6Address) else None
    for candidate in (address, inside):
        if candidate is None:
            continue
        if (
            candidate.is_loopback
            or candidate.is_link_local
            or candidate.is_unspecified
            or candidate in _METADATA_ADDRESSES
        ):
            return (
                "is a loopback, link-local, cloud metadata or unspecified address, which "
                "FineTuneJobs may not reach"
            )
        if candidate == _api_server_address():
            return f"is the Kubernetes API server, not an {kind}"
    if inside is not None and address not in _NAT64:
        return (
            "is an IPv4 address written as IPv6 (IPv4-mapped, -compatible or -translated), "
            "which is not allowed in this cluster; write the IPv4 address itself"
        )
    return None


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


def endpoint_problem(
    endpoint: str, allowed: tuple[str, ...], kind: str = "S3 endpoint"
) -> str | None:
    """Why a FineTuneJob may not send S3 requests (signed with its credentials) to
    ``endpoint``, or None. ``kind`` names what the endpoint is for, in the refusal."""
    try:
        parts = urlsplit(endpoint)
        port = parts.port
    except ValueError:
        return "is not a valid URL"
    host = (parts.hostname or "").rstrip(".")
    address = _address(host)
    if address is None and not _HOST_NAME.match(host):
        return (
            "does not name its host as a DNS name (letters, digits, '-', '.' and '_') or an "
            "IP address, so URL parsers may disagree on where it goes"
        )
    if allowed:
        if _endpoint_listed(host, port, allowed):
            return None
        return f"is not one of the {kind}s allowed in this cluster: {', '.join(allowed)}"
    if address is not None:
        return _address_problem(address, kind)
    if host == "localhost" or host.endswith(".localhost") or host in _METADATA_NAMES:
        return "names this machine or a cloud metadata service, which FineTuneJobs may not reach"
    if host in _API_SERVER_NAMES:
        return f"is the Kubernetes API server, not an {kind}"
    return None


# In-cluster service names: a single label or <service>.<namespace> resolves through the
# pod's DNS search path, and *.svc / *.cluster.local name Services directly.
_CLUSTER_NAME = re.compile(r"^([^.]+|[^.]+\.[^.]+|.*\.svc(\..*)?|.*\.cluster\.local)$")
# Private and shared address space, where ClusterIPs, pod IPs and nodes live.
_PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)


def tracking_uri_problem(uri: str, allowed: tuple[str, ...]) -> str | None:
    """Why a FineTuneJob may not report to the tracking server at ``uri``, or None. The
    trainer sends it the run's parameters, metrics and adapter (with the credentials of
    the FineTuneJob's Secret): beyond what S3 endpoints refuse, an unlisted tracking host
    may not be an in-cluster service or a private address either, unless listed."""
    problem = endpoint_problem(uri, allowed, "tracking host")
    if problem or allowed:
        return problem
    host = (urlsplit(uri).hostname or "").rstrip(".")
    address = _address(host)
    inside = _ipv4_inside(address) if isinstance(address, ipaddress.IPv6Address) else None
    if any(
        candidate is not None and any(candidate in net for net in _PRIVATE_NETWORKS)
        for candidate in (address, inside)
    ):
        return (
            "is a private address (cluster and node networks), which FineTuneJobs may not "
            "reach unless an administrator lists it (trainer.allowedTrackingHosts)"
        )
    if address is None and _CLUSTER_NAME.match(host):
        return (
            "may name an in-cluster service (one or two labels, which the pod's DNS search "
            "path resolves as <service>.<namespace>, or *.svc, *.cluster.local), which "
            "FineTuneJobs may not reach unless an administrator lists it "
            "(trainer.allowedTrackingHosts)"
        )
    return None


def _quote(value: str) -> str:
    return safe_text(value, _QUOTE_LIMIT)


def toleration_problem(
    toleration: Toleration, allowed_keys: tuple[str, ...], allow_wildcard: bool
) -> str | None:
    """Why a FineTuneJob may not carry ``toleration``, and what to do instead, or None."""
    key = toleration.key
    if not key:
        if allow_wildcard:
            return None
        return (
            "a toleration without a key tolerates every taint (control-plane and reserved "
            "nodes included) and is not allowed in this cluster; name the taint's key"
        )
    if key in allowed_keys:
        return None
    if key in _EVICTION_DELAY_KEYS:
        if toleration.effect == "NoExecute" and toleration.toleration_seconds is not None:
            return None
        return (
            f"{key} may be tolerated only with effect NoExecute and a tolerationSeconds (how "
            "long the pod stays on a node that is not ready or unreachable); set both, or "
            "remove the toleration"
        )
    if key in _RESERVED_TAINT_KEYS or key.startswith(_RESERVED_TAINT_PREFIXES):
        return (
            f"{_quote(key)} is a taint Kubernetes reserves for control-plane, cordoned, "
            "unhealthy or add-on nodes, and tolerating it is not allowed in this cluster; "
            "remove the toleration, or ask an administrator to allow the key "
            "(trainer.allowedTolerationKeys)"
        )
    return None


def _endpoints(spec: FineTuneJobSpec) -> list[tuple[str, str]]:
    found = []
    for field, location in (
        ("spec.model.s3.endpoint", spec.model.s3),
        ("spec.dataset.s3.endpoint", spec.dataset.s3),
        ("spec.output.s3.endpoint", spec.output.s3),
        ("spec.dataset.eval.s3.endpoint", spec.dataset.eval.s3 if spec.dataset.eval else None),
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
            problems.append(f"{field}: {_quote(endpoint)} {problem}")
    mlflow = spec.training.mlflow
    if mlflow is not None:
        problem = tracking_uri_problem(mlflow.tracking_uri, config.allowed_tracking_hosts)
        if problem:
            problems.append(
                f"spec.training.mlflow.trackingUri: {_quote(mlflow.tracking_uri)} {problem}"
            )
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
    for index, toleration in enumerate(spec.scheduling.tolerations or []):
        problem = toleration_problem(
            toleration, config.allowed_toleration_keys, config.allow_wildcard_tolerations
        )
        if problem:
            problems.append(f"spec.scheduling.tolerations[{index}]: {problem}")
    return problems
