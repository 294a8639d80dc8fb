"""Helpers of the chart's end-to-end tests: helm releases on the local control plane,
tokens minted for a ServiceAccount, and `kubectl auth can-i --list` parsed."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from finetune_localcluster.cluster import LocalCluster

from .helm import CHART, run_helm
from .operator_api_calls import Rules

# Values every test release uses: on the local node agent a pod shares the host's network
# namespace (with its own 127.0.0.x address), so the health endpoint binds the pod's IP.
LOCAL_VALUES: dict[str, Any] = {
    "operator": {
        "health": {"bindAddress": "$(POD_IP)"},
        "logFormat": "plain",
        "progressPollSeconds": 1,
        "metricsTimeoutSeconds": 1,
    },
    # Pods of the node agent share the host's network: bind the pod's own address.
    "metrics": {"operator": {"bindAddress": "$(POD_IP)"}},
}


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in, recursively (as helm merges values files)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


@dataclass
class Release:
    """A helm release of the chart on the local cluster."""

    cluster: LocalCluster
    helm: Path
    name: str
    namespace: str
    values: dict[str, Any]
    workdir: Path
    output: str = ""
    removed: bool = field(default=False)

    def _helm(self, *args: str, check: bool = True) -> Any:
        return run_helm(
            self.helm, [*args, "--kubeconfig", str(self.cluster.kubeconfig)], check=check
        )

    def _values_file(self) -> Path:
        path = self.workdir / f"values-{self.name}.yaml"
        path.write_text(yaml.safe_dump(self.values))
        return path

    def install(self, chart: Path = CHART) -> str:
        self.output = self._apply("install", chart)
        return self.output

    def upgrade(self, chart: Path = CHART) -> str:
        return self._apply("upgrade", chart)

    def _apply(self, verb: str, chart: Path) -> str:
        # --take-ownership: the CRD is cluster-scoped and other releases (and tests that
        # apply crds/ with kubectl) may have created it first.
        result = self._helm(
            verb,
            self.name,
            str(chart),
            "--namespace",
            self.namespace,
            "--values",
            str(self._values_file()),
            "--take-ownership",
            "--wait",
            "--timeout",
            "180s",
        )
        return str(result.stdout)

    def uninstall(self) -> None:
        if not self.removed:
            self._helm("uninstall", self.name, "--namespace", self.namespace, "--wait")
            self.removed = True

    @property
    def fullname(self) -> str:
        return f"{self.name}-finetune-operator"


def mint_token(api_client: Any, namespace: str, service_account: str) -> str:
    """A short-lived token for ``service_account``, from the TokenRequest API."""
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=1800)
    )
    response = client.CoreV1Api(api_client).create_namespaced_service_account_token(
        service_account, namespace, request
    )
    return str(response.status.token)


def token_client(admin: Any, token: str) -> Any:
    """An ApiClient for the same server and CA as ``admin``, authenticated by ``token``
    only (no client certificate)."""
    configuration = client.Configuration()
    configuration.host = admin.configuration.host
    configuration.ssl_ca_cert = admin.configuration.ssl_ca_cert
    configuration.verify_ssl = True
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(configuration)


_ROW = re.compile(
    r"^(?P<resource>\S*)\s+\[(?P<urls>[^\]]*)\]\s+\[(?P<names>[^\]]*)\]\s+"
    r"\[(?P<verbs>[^\]]*)\]\s*$"
)


def can_i_list(cluster: LocalCluster, user: str, namespace: str) -> tuple[Rules, set[str]]:
    """(resource rules, non-resource URLs) of `kubectl auth can-i --list --as=user -n ns`.

    Resource keys are (apiGroup, resource[/subresource]) as in the chart's roles."""
    out = cluster.kubectl(["auth", "can-i", "--list", f"--as={user}", "-n", namespace]).stdout
    rules: Rules = {}
    urls: set[str] = set()
    for line in out.splitlines()[1:]:
        match = _ROW.match(line)
        assert match, f"unexpected can-i line: {line!r}"
        verbs = set(match["verbs"].split())
        assert not match["names"], f"resourceNames in {line!r}"
        if not match["resource"]:
            urls.update(match["urls"].split())
            continue
        resource, _, group = match["resource"].partition(".")
        # "finetunejobs.finetune.dev/status" -> group "finetune.dev", "finetunejobs/status"
        if "/" in group:
            group, _, sub = group.partition("/")
            resource = f"{resource}/{sub}"
        rules.setdefault((group, resource), set()).update(verbs)
    return rules, urls


def json_of(cluster: LocalCluster, *args: str) -> Any:
    return json.loads(cluster.kubectl([*args, "-o", "json"]).stdout)
