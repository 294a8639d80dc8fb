"""The operator's own settings, read once from the environment at start-up.

Every knob has an FTO_ environment variable so the Helm chart, a container and
``kopf run`` configure the operator the same way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from finetune_api.spec import Toleration

DEFAULT_TRAINER_IMAGE = "ghcr.io/finetune-operator/trainer:0.1.0"


@dataclass(frozen=True)
class OperatorConfig:
    """Settings of one operator process."""

    # Namespaces to watch; empty means the whole cluster.
    namespaces: tuple[str, ...] = ()
    trainer_image: str = DEFAULT_TRAINER_IMAGE
    trainer_image_pull_policy: str = "IfNotPresent"
    # The trainer checkpoints on SIGTERM; give it time to finish writing before SIGKILL.
    trainer_grace_period_seconds: int = 300
    # Trainer pods' log format (their FTO_LOG_FORMAT): plain | json.
    trainer_log_format: str = "plain"
    # UID/GID the trainer runs as (restricted Pod Security needs a non-root numeric user).
    # None: the platform assigns trainer pods their user (OpenShift's restricted-v2).
    trainer_uid: int | None = 1000
    # ServiceAccount of trainer pods whose spec names none ("" = the namespace's default).
    trainer_service_account: str = ""
    progress_poll_seconds: float = 10.0
    # Total time one read of a trainer's metrics may take, connecting included.
    metrics_timeout_seconds: float = 3.0
    # Trainer metrics read at once; a slow endpoint holds one of these, never the round.
    scrape_concurrency: int = 32
    # Threads reconciling FineTuneJobs; each spends most of its time waiting on the API.
    workers: int = 16
    # Client-side timeouts of every API call the operator makes itself.
    api_connect_timeout: float = 5.0
    api_read_timeout: float = 30.0
    # How long a watch may take to deliver the operator's own write back before the
    # liveness probe calls the stream stuck.
    watch_echo_deadline_seconds: float = 150.0
    # How often the operator lists what it watches, to catch deletions a broken watch
    # missed (resync.py): a metadata-only LIST per kind and watched namespace.
    resync_seconds: float = 600.0
    liveness_endpoint: str | None = "http://0.0.0.0:8080/healthz"
    # The operator's own Prometheus endpoint; 0 disables it.
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 8081
    log_format: str = "plain"  # plain | json
    log_level: str = "INFO"
    watch_server_timeout_seconds: int = 300
    watch_client_timeout_seconds: int = 330
    # Extra labels/tolerations for every trainer pod (e.g. a GPU node pool's taint).
    default_node_selector: Mapping[str, str] = field(default_factory=dict)
    default_tolerations: tuple[dict[str, object], ...] = ()
    # What spec.image and spec.serviceAccountName may name (policy.py); empty: anything.
    allowed_images: tuple[str, ...] = ()
    allowed_service_accounts: tuple[str, ...] = ()
    # S3 endpoints FineTuneJobs may name (host, host:port or *.suffix); empty: any but
    # loopback, link-local and the API server's names.
    allowed_s3_endpoints: tuple[str, ...] = ()
    # Experiment-tracking hosts (training.mlflow.trackingUri) FineTuneJobs may name, in the
    # same forms; empty: any but what S3 endpoints refuse and in-cluster services.
    allowed_tracking_hosts: tuple[str, ...] = ()
    # Priority classes FineTuneJobs may name; empty: any but system-*.
    allowed_priority_classes: tuple[str, ...] = ()
    # Whether a toleration without a key (it tolerates every taint) is allowed.
    allow_wildcard_tolerations: bool = False
    # Taint keys FineTuneJobs may tolerate although Kubernetes reserves them
    # (node-role.kubernetes.io/*, node.kubernetes.io/*, CriticalAddonsOnly: policy.py).
    allowed_toleration_keys: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if env is None else env

        def get(name: str, default: str, parse: Callable[[str], Any] = str) -> Any:
            text = env.get(f"FTO_{name}", default)
            try:
                return parse(text)
            except ValueError:  # only the parsers of numbers and flags raise it
                # int("10s") would say only "invalid literal"; name the variable instead.
                form = {
                    int: "a whole number",
                    _positive_int: "a whole number of at least 1",
                    _positive_float: "a number above 0",
                    _flag: "true or false",
                    _uid_or_platform: "a user id of at least 1, or empty for the platform's",
                }.get(parse, "a number")
                raise ValueError(
                    f"FTO_{name} must be {form} such as {default}, not {text!r}"
                ) from None

        def listed(text: str) -> tuple[str, ...]:
            return tuple(item.strip() for item in text.split(",") if item.strip())

        namespaces = listed(get("NAMESPACES", ""))
        selector = {}
        for pair in get("DEFAULT_NODE_SELECTOR", "").split(","):
            if "=" in pair:
                key, value = pair.split("=", 1)
                selector[key.strip()] = value.strip()
        liveness = get("LIVENESS_ENDPOINT", "http://0.0.0.0:8080/healthz") or None
        log_format = get("LOG_FORMAT", "plain")
        if log_format not in ("plain", "json"):
            raise ValueError(f"FTO_LOG_FORMAT must be plain or json, not {log_format!r}")
        trainer_log_format = get("TRAINER_LOG_FORMAT", "plain")
        if trainer_log_format not in ("plain", "json"):
            raise ValueError(
                f"FTO_TRAINER_LOG_FORMAT must be plain or json, not {trainer_log_format!r}"
            )
        return cls(
            namespaces=namespaces,
            trainer_image=get("TRAINER_IMAGE", DEFAULT_TRAINER_IMAGE),
            trainer_image_pull_policy=get("TRAINER_IMAGE_PULL_POLICY", "IfNotPresent"),
            trainer_grace_period_seconds=get("TRAINER_GRACE_PERIOD_SECONDS", "300", int),
            trainer_log_format=trainer_log_format,
            trainer_uid=get("TRAINER_UID", "1000", _uid_or_platform),
            trainer_service_account=get("TRAINER_SERVICE_ACCOUNT", "").strip(),
            progress_poll_seconds=get("PROGRESS_POLL_SECONDS", "10", float),
            metrics_timeout_seconds=get("METRICS_TIMEOUT_SECONDS", "3", float),
            scrape_concurrency=get("SCRAPE_CONCURRENCY", "32", _positive_int),
            workers=get("WORKERS", "16", _positive_int),
            api_connect_timeout=get("API_CONNECT_TIMEOUT_SECONDS", "5", float),
            api_read_timeout=get("API_READ_TIMEOUT_SECONDS", "30", float),
            watch_echo_deadline_seconds=get("WATCH_ECHO_DEADLINE_SECONDS", "150", float),
            resync_seconds=get("RESYNC_SECONDS", "600", _positive_float),
            liveness_endpoint=liveness,
            metrics_host=get("OPERATOR_METRICS_HOST", "0.0.0.0"),
            metrics_port=get("OPERATOR_METRICS_PORT", "8081", int),
            log_format=log_format,
            log_level=get("LOG_LEVEL", "INFO").upper(),
            watch_server_timeout_seconds=get("WATCH_SERVER_TIMEOUT_SECONDS", "300", int),
            watch_client_timeout_seconds=get("WATCH_CLIENT_TIMEOUT_SECONDS", "330", int),
            default_node_selector=selector,
            default_tolerations=_tolerations(get("DEFAULT_TOLERATIONS", "")),
            allowed_images=listed(get("ALLOWED_IMAGES", "")),
            allowed_service_accounts=listed(get("ALLOWED_SERVICE_ACCOUNTS", "")),
            allowed_s3_endpoints=listed(get("ALLOWED_S3_ENDPOINTS", "")),
            allowed_tracking_hosts=listed(get("ALLOWED_TRACKING_HOSTS", "")),
            allowed_priority_classes=listed(get("ALLOWED_PRIORITY_CLASSES", "")),
            allow_wildcard_tolerations=get("ALLOW_WILDCARD_TOLERATIONS", "false", _flag),
            allowed_toleration_keys=listed(get("ALLOWED_TOLERATION_KEYS", "")),
        )


def _flag(text: str) -> bool:
    value = text.strip().lower()
    if value not in ("true", "false", ""):
        raise ValueError(text)
    return value == "true"


def _positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise ValueError(text)
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def _uid_or_platform(text: str) -> int | None:
    """FTO_TRAINER_UID: a user id, or empty when the platform assigns one."""
    return _positive_int(text) if text.strip() else None


def _tolerations(text: str) -> tuple[dict[str, object], ...]:
    """FTO_DEFAULT_TOLERATIONS: a JSON list of pod tolerations."""
    if not text.strip():
        return ()
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"FTO_DEFAULT_TOLERATIONS is not valid JSON: {exc}") from exc
    if not isinstance(items, list):
        raise ValueError("FTO_DEFAULT_TOLERATIONS must be a JSON list of tolerations")
    # The chart's values allow "" for "unset" (as a pod spec does); the model wants None.
    return tuple(
        Toleration.model_validate(
            {k: v for k, v in item.items() if v != ""} if isinstance(item, dict) else item
        ).to_wire()
        for item in items
    )
