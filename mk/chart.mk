# The Helm chart: `include mk/chart.mk` from the Makefile (after `crds`, whose output the
# chart embeds).
#
#   make chart-docs     # values.schema.json, README.md and the CRD copy of the chart,
#                       # and deploy/argocd/argocd-cm.yaml, from their sources
#   make chart-lint     # helm lint --strict
#   make chart-package  # dist/finetune-operator-<version>.tgz

CHART_DIR := charts/finetune-operator

.PHONY: chart-docs chart-lint chart-package

chart-docs: venv ## Regenerate the chart's schema, README and CRD copy, and the argocd-cm snippet
	$(PY) hack/chart/generate.py

chart-lint: venv binaries ## helm lint the chart (strict)
	"$$(localcluster/build-binaries.sh)/helm" lint --strict $(CHART_DIR) \
		--kube-version "$$(sed -n 's/^KUBE_VERSION=\(v[0-9.]*\).*/\1/p' localcluster/build-binaries.sh)"

chart-package: venv binaries chart-docs ## Package the chart into dist/
	mkdir -p dist
	"$$(localcluster/build-binaries.sh)/helm" package $(CHART_DIR) --destination dist
