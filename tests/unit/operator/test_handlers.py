"""kopf settings: the operator asks the API server only for its own Jobs and pods."""

from __future__ import annotations

import kopf
from kopf._cogs.structs.references import Resource

from finetune_operator.config import OperatorConfig
from finetune_operator.handlers import configure_kopf
from finetune_operator.naming import child_labels


def test_jobs_and_pods_are_filtered_on_the_api_server() -> None:
    settings = kopf.OperatorSettings()
    configure_kopf(settings, OperatorConfig())
    selectors = settings.watching.label_selectors
    wanted = ["app.kubernetes.io/managed-by=finetune-operator,finetune.dev/finetunejob"]
    assert selectors.collect(Resource("batch", "v1", "jobs")) == wanted
    assert selectors.collect(Resource("", "v1", "pods")) == wanted
    # The FineTuneJobs themselves carry no such labels and are all watched.
    assert selectors.collect(Resource("finetune.dev", "v1alpha1", "finetunejobs")) == []


def test_the_selector_matches_the_labels_children_get() -> None:
    labels = child_labels("run", "uid")
    settings = kopf.OperatorSettings()
    configure_kopf(settings, OperatorConfig())
    (selector,) = settings.watching.label_selectors.collect(Resource("", "v1", "pods"))
    for term in selector.split(","):
        key, _, value = term.partition("=")
        assert key in labels and (not value or labels[key] == value)
