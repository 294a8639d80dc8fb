"""training.reportTo, training.mlflow and training.wandb: what the schema accepts, what it
refuses (naming the field and the fix), and that tracking never changes the fingerprint."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from finetune_api.config import TrainerConfig

MLFLOW = {"trackingUri": "https://mlflow.example.com"}


def config(**training: Any) -> TrainerConfig:
    return TrainerConfig.model_validate({"training": training})


def test_all_three_trackers_with_their_settings() -> None:
    parsed = config(
        reportTo=["tensorboard", "mlflow", "wandb"],
        mlflow={
            **MLFLOW,
            "experiment": "llm",
            "credentialsSecretRef": {"name": "mlflow", "tokenKey": "token"},
        },
        wandb={"project": "ft", "entity": "team", "apiKeySecretRef": {"name": "w", "key": "k"}},
    )
    training = parsed.training
    assert training.report_to == ["tensorboard", "mlflow", "wandb"]
    assert training.mlflow is not None and training.mlflow.experiment == "llm"
    assert training.wandb is not None and training.wandb.api_key_secret_ref is not None
    assert parsed.to_wire()["training"]["mlflow"]["credentialsSecretRef"] == {
        "name": "mlflow",
        "tokenKey": "token",
    }


def test_no_tracking_leaves_the_wire_as_it_was() -> None:
    wire = TrainerConfig().to_wire()["training"]
    assert not {"reportTo", "mlflow", "wandb"} & wire.keys()


def test_tracking_is_not_part_of_the_fingerprint() -> None:
    tracked = config(reportTo=["mlflow", "tensorboard"], mlflow=MLFLOW)
    assert tracked.fingerprint() == TrainerConfig().fingerprint()


@pytest.mark.parametrize(
    ("training", "message"),
    [
        ({"reportTo": ["mlflow"]}, "training.reportTo has mlflow: set training.mlflow"),
        ({"reportTo": ["wandb", "wandb"]}, "lists a tracker twice"),
        ({"mlflow": MLFLOW}, "training.reportTo does not list mlflow; add it or remove"),
        ({"wandb": {}}, "training.reportTo does not list wandb; add it or remove"),
        ({"reportTo": ["comet"]}, "reportTo"),
        (
            {"reportTo": ["mlflow"], "mlflow": {"trackingUri": "ftp://x.example.com"}},
            "trackingUri",
        ),
        (
            {"reportTo": ["mlflow"], "mlflow": {"trackingUri": "https://u:p@x.example.com"}},
            "credentialsSecretRef",
        ),
        (
            {
                "reportTo": ["mlflow"],
                "mlflow": {**MLFLOW, "credentialsSecretRef": {"name": "s", "usernameKey": "u"}},
            },
            "usernameKey and passwordKey together",
        ),
        (
            {
                "reportTo": ["mlflow"],
                "mlflow": {
                    **MLFLOW,
                    "credentialsSecretRef": {
                        "name": "s",
                        "tokenKey": "t",
                        "usernameKey": "u",
                        "passwordKey": "p",
                    },
                },
            },
            "not both kinds",
        ),
        ({"reportTo": ["wandb"], "wandb": {"project": "has space"}}, "project"),
    ],
)
def test_refused_with_the_field_and_the_fix(training: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as error:
        config(**training)
    assert message in str(error.value), str(error.value)


def test_basic_auth_credentials() -> None:
    ref = {"name": "s", "usernameKey": "user", "passwordKey": "pass"}
    parsed = config(reportTo=["mlflow"], mlflow={**MLFLOW, "credentialsSecretRef": ref})
    assert parsed.training.mlflow is not None
    creds = parsed.training.mlflow.credentials_secret_ref
    assert creds is not None and creds.password_key == "pass" and creds.token_key is None
