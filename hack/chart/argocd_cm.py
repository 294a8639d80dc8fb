"""deploy/argocd/argocd-cm.yaml: the argocd-cm entry that installs health.lua."""

from __future__ import annotations

HEALTH_KEY = "resource.customizations.health.finetune.dev_FineTuneJob"

_HEADER = """\
# Generated from deploy/argocd/health.lua by hack/chart/generate.py; do not edit.
# Merge it into Argo CD's ConfigMap (from the repository root):
#   kubectl -n argocd patch configmap argocd-cm --type merge \\
#     --patch-file deploy/argocd/argocd-cm.yaml
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
  namespace: argocd
  labels:
    app.kubernetes.io/name: argocd-cm
    app.kubernetes.io/part-of: argocd
data:
"""


def render_argocd_cm(health_lua: str) -> str:
    """The ConfigMap text, with the script as a literal block (kept byte for byte)."""
    body = "".join(f"    {line}".rstrip() + "\n" for line in health_lua.splitlines())
    return f"{_HEADER}  {HEALTH_KEY}: |\n{body}"
