"""kopf gets the same credentials the reconciler's client uses."""

from __future__ import annotations

import pytest
from kubernetes import client

from finetune_operator.runner import connection_info


@pytest.mark.parametrize(
    "stored, token",
    [
        ({"BearerToken": "bearer in-cluster-token"}, "in-cluster-token"),  # in-cluster loader
        ({"authorization": "Bearer kubeconfig-token"}, "kubeconfig-token"),  # kubeconfig
        ({}, None),  # client certificates
    ],
)
def test_bearer_token_without_its_scheme(stored: dict[str, str], token: str | None) -> None:
    configuration = client.Configuration()
    configuration.host = "https://127.0.0.1:6443"
    configuration.api_key = stored
    info = connection_info(client.ApiClient(configuration))
    assert info.token == token
    assert info.server == "https://127.0.0.1:6443"


def test_rotated_in_cluster_token_is_read_again() -> None:
    configuration = client.Configuration()
    configuration.host = "https://127.0.0.1:6443"
    tokens = iter(["first", "second"])

    def refresh(config: client.Configuration) -> None:
        config.api_key = {"BearerToken": f"bearer {next(tokens)}"}

    configuration.refresh_api_key_hook = refresh
    api = client.ApiClient(configuration)
    assert connection_info(api).token == "first"
    assert connection_info(api).token == "second"
