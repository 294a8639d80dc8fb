"""Shared pytest setup: the local control plane's fixtures (cluster, node agent, S3)."""

pytest_plugins = ["finetune_localcluster.pytest_plugin"]
