"""Fixtures of the local cluster's own tests."""

from __future__ import annotations

import pytest

from finetune_localcluster.cluster import LocalCluster
from finetune_localcluster.kubeapi import KubeAPI


@pytest.fixture
def api(cluster: LocalCluster) -> KubeAPI:
    """The admin JSON client of the session cluster."""
    assert cluster.api is not None
    return cluster.api
