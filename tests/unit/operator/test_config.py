"""Operator settings from FTO_* environment variables."""

from __future__ import annotations

import pytest

from finetune_operator.config import DEFAULT_TRAINER_IMAGE, OperatorConfig


def test_defaults() -> None:
    config = OperatorConfig.from_env({})
    assert config.namespaces == ()
    assert config.trainer_image == DEFAULT_TRAINER_IMAGE
    assert config.liveness_endpoint == "http://0.0.0.0:8080/healthz"


def test_everything_from_the_environment() -> None:
    config = OperatorConfig.from_env(
        {
            "FTO_NAMESPACES": "ml, research",
            "FTO_TRAINER_IMAGE": "r/t:2",
            "FTO_PROGRESS_POLL_SECONDS": "2.5",
            "FTO_LOG_FORMAT": "json",
            "FTO_LIVENESS_ENDPOINT": "",
            "FTO_DEFAULT_NODE_SELECTOR": "pool=gpu,tier=a",
            "FTO_DEFAULT_TOLERATIONS": '[{"key": "gpu", "operator": "Exists"}]',
        }
    )
    assert config.namespaces == ("ml", "research")
    assert config.trainer_image == "r/t:2"
    assert config.progress_poll_seconds == 2.5
    assert config.log_format == "json"
    assert config.liveness_endpoint is None
    assert config.default_node_selector == {"pool": "gpu", "tier": "a"}
    assert config.default_tolerations == ({"key": "gpu", "operator": "Exists"},)


@pytest.mark.parametrize(
    "env, fragment",
    [
        ({"FTO_LOG_FORMAT": "xml"}, "FTO_LOG_FORMAT"),
        ({"FTO_DEFAULT_TOLERATIONS": "{"}, "not valid JSON"),
        ({"FTO_DEFAULT_TOLERATIONS": '{"key": "a"}'}, "JSON list"),
        (
            {"FTO_TRAINER_UID": "abc"},
            "FTO_TRAINER_UID must be a user id of at least 1, or empty for the platform's",
        ),
        ({"FTO_TRAINER_UID": "0"}, "FTO_TRAINER_UID must be a user id of at least 1"),
        ({"FTO_OPERATOR_METRICS_PORT": "80.5"}, "FTO_OPERATOR_METRICS_PORT must be a whole"),
        (
            {"FTO_PROGRESS_POLL_SECONDS": "10s"},
            "FTO_PROGRESS_POLL_SECONDS must be a number such as 10, not '10s'",
        ),
    ],
)
def test_bad_settings_say_which_variable(env: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        OperatorConfig.from_env(env)


def test_an_empty_trainer_uid_leaves_the_user_to_the_platform() -> None:
    assert OperatorConfig.from_env({"FTO_TRAINER_UID": ""}).trainer_uid is None
    assert OperatorConfig.from_env({}).trainer_uid == 1000


def test_trainer_logs_are_plain_unless_asked_for_json() -> None:
    assert OperatorConfig.from_env({}).trainer_log_format == "plain"
    assert OperatorConfig.from_env({"FTO_TRAINER_LOG_FORMAT": "json"}).trainer_log_format == "json"
    with pytest.raises(ValueError, match="FTO_TRAINER_LOG_FORMAT must be plain or json"):
        OperatorConfig.from_env({"FTO_TRAINER_LOG_FORMAT": "xml"})
