{{/* Chart name, truncated to leave room for suffixes in resource names. */}}
{{- define "finetune-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: the release name, plus the chart name unless the release name has it. */}}
{{- define "finetune-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "finetune-operator.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Selector labels of the operator pod (immutable in a Deployment: keep them few). */}}
{{- define "finetune-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "finetune-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* Labels on every resource the chart creates. */}}
{{- define "finetune-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "finetune-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: finetune-operator
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The operator's ServiceAccount name. */}}
{{- define "finetune-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "finetune-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* An image reference from {registry, repository, tag, digest}: the digest wins. */}}
{{- define "finetune-operator.imageRef" -}}
{{- $image := .image -}}
{{- $repo := $image.repository -}}
{{- if $image.registry -}}
{{- $repo = printf "%s/%s" $image.registry $image.repository -}}
{{- end -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $repo $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .appVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "finetune-operator.operatorImage" -}}
{{- include "finetune-operator.imageRef" (dict "image" .Values.image "appVersion" .Chart.AppVersion) -}}
{{- end -}}

{{- define "finetune-operator.trainerImage" -}}
{{- include "finetune-operator.imageRef" (dict "image" .Values.trainer.image "appVersion" .Chart.AppVersion) -}}
{{- end -}}

{{/* Namespaces with the trainer ServiceAccount and NetworkPolicy, as a JSON list. */}}
{{- define "finetune-operator.trainerNamespaces" -}}
{{- $namespaces := .Values.trainer.namespaces -}}
{{- if not $namespaces -}}
{{- $namespaces = .Values.watchNamespaces | default (list .Release.Namespace) -}}
{{- end -}}
{{- toJson $namespaces -}}
{{- end -}}

{{/* "true" when trainer pods default to the chart's trainer ServiceAccount. */}}
{{- define "finetune-operator.trainerServiceAccountIsDefault" -}}
{{- $choice := .Values.trainer.serviceAccount.useAsDefault -}}
{{- if kindIs "invalid" $choice -}}
{{- $choice = and .Values.trainer.serviceAccount.create (not (empty .Values.watchNamespaces)) (empty .Values.trainer.namespaces) -}}
{{- end -}}
{{- if $choice }}true{{ end -}}
{{- end -}}

{{/*
The operator's API access, derived from every call in operator/finetune_operator/kube.py
and the watches kopf opens for handlers.py (tests/chart holds them equal). Shared by the
ClusterRole and the per-namespace Roles.
*/}}
{{- define "finetune-operator.rules" -}}
# Watch FineTuneJobs (kopf): the operator reconciles from what the watch delivers.
- apiGroups: ["finetune.dev"]
  resources: ["finetunejobs"]
  verbs: ["list", "watch"]
# Write the observed state. The operator never writes spec, so GitOps sees no drift.
- apiGroups: ["finetune.dev"]
  resources: ["finetunejobs/status"]
  verbs: ["patch"]
# Children carry an owner reference with blockOwnerDeletion, which clusters running the
# OwnerReferencesPermissionEnforcement admission plugin allow only with this permission.
- apiGroups: ["finetune.dev"]
  resources: ["finetunejobs/finalizers"]
  verbs: ["update"]
# The trainer Job: create it, watch it, carry spec.lifecycle edits (suspend, ...) over,
# read one that is in the way of creating it (to adopt it only if it is the operator's), and
# delete one whose pod cannot start (a missing Secret, an unpullable image) so its GPU is
# freed once spec.lifecycle.startupDeadlineSeconds has passed.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["create", "get", "list", "watch", "patch", "delete"]
# The dataset ConfigMap and the PersistentVolumeClaims a spec names, read one by one by
# name before the Job is created (a missing one holds the Job back). Never listed or
# watched; the operator creates neither, and reads no Secret at all.
- apiGroups: [""]
  resources: ["configmaps", "persistentvolumeclaims"]
  verbs: ["get"]
# Trainer pods: phase, restarts, termination message and the IP of the metrics endpoint;
# with spec.lifecycle.onStall: Restart, a trainer past its progress deadline is deleted (by
# uid) so its Job starts another from the newest checkpoint.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "delete"]
# Events on FineTuneJobs (Created, Checkpoint, Restarted, Failed, ...); a repeat updates
# the count of the Event it repeats.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}

{{/* FTO_DEFAULT_NODE_SELECTOR: key=value pairs joined by commas, in key order. */}}
{{- define "finetune-operator.nodeSelectorEnv" -}}
{{- $pairs := list -}}
{{- range $key := keys . | sortAlpha -}}
{{- $pairs = append $pairs (printf "%s=%s" $key (get $ $key)) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}

{{/* The denied egress CIDRs of one address family ("4" or "6"), as a JSON list. */}}
{{- define "finetune-operator.deniedEgress" -}}
{{- $out := list -}}
{{- range .cidrs -}}
{{- if eq (contains ":" .) (eq $.family "6") -}}
{{- $out = append $out . -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/*
trainer.allowedImages sorted by how an entry matches (policy.image_allowed), as JSON:
prefixes (ending in "/"), repositories (any tag or digest) and exact references (a tag or a
digest; the default trainer image is always one).
*/}}
{{- define "finetune-operator.imagePolicy" -}}
{{- $prefixes := list -}}
{{- $repositories := list -}}
{{- $exact := list (include "finetune-operator.trainerImage" .) -}}
{{- range .Values.trainer.allowedImages -}}
{{- if hasSuffix "/" . -}}
{{- $prefixes = append $prefixes . -}}
{{- else if or (contains "@" .) (regexMatch ":[^/]*$" .) -}}
{{- $exact = append $exact . -}}
{{- else -}}
{{- $repositories = append $repositories . -}}
{{- end -}}
{{- end -}}
{{- toJson (dict "prefixes" $prefixes "repositories" $repositories "exact" $exact "any" (empty .Values.trainer.allowedImages)) -}}
{{- end -}}
