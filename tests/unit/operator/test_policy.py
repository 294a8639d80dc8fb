"""Which images and ServiceAccounts a FineTuneJob may choose when the operator narrows them."""

from __future__ import annotations

import pytest

from finetune_operator.api.spec import FineTuneJobSpec
from finetune_operator.config import OperatorConfig
from finetune_operator.policy import image_allowed, policy_problems

from .conftest import spec_of

ALLOWED = ("registry.example/ml/", "ghcr.io/org/trainer")


@pytest.mark.parametrize(
    "image",
    [
        "registry.example/ml/trainer:1",
        "registry.example/ml/team/trainer@sha256:" + "a" * 64,
        "ghcr.io/org/trainer",
        "ghcr.io/org/trainer:2.0",
        "ghcr.io/org/trainer@sha256:" + "b" * 64,
    ],
)
def test_allowed_images(image: str) -> None:
    assert image_allowed(image, ALLOWED)


@pytest.mark.parametrize(
    "image",
    ["registry.example/mlx/trainer:1", "ghcr.io/org/trainer-evil:1", "ghcr.io/org/trainer/x:1"],
)
def test_images_that_only_look_allowed(image: str) -> None:
    assert not image_allowed(image, ALLOWED)


def spec(**parts: object) -> FineTuneJobSpec:
    return spec_of(parts)


def test_empty_lists_allow_anything() -> None:
    assert policy_problems(spec(image="any/img:1", serviceAccountName="x"), OperatorConfig()) == []


def test_operator_defaults_are_always_allowed() -> None:
    config = OperatorConfig(
        trainer_image="r/trainer:1",
        trainer_service_account="trainer",
        allowed_images=("other/",),
        allowed_service_accounts=("other",),
    )
    assert policy_problems(spec(image="r/trainer:1", serviceAccountName="trainer"), config) == []


def test_each_refusal_names_the_field_and_the_choices() -> None:
    config = OperatorConfig(allowed_images=ALLOWED, allowed_service_accounts=("trainer",))
    problems = policy_problems(spec(image="evil/img:1", serviceAccountName="admin"), config)
    assert problems == [
        "spec.image: evil/img:1 is not allowed in this cluster; leave it unset for the default "
        "trainer image or use one of: registry.example/ml/, ghcr.io/org/trainer",
        "spec.serviceAccountName: admin is not allowed in this cluster; leave it unset or use "
        "one of: trainer",
    ]


def test_the_lists_come_from_the_environment() -> None:
    config = OperatorConfig.from_env(
        {"FTO_ALLOWED_IMAGES": " a/ , b/c ,", "FTO_ALLOWED_SERVICE_ACCOUNTS": "t1,t2"}
    )
    assert config.allowed_images == ("a/", "b/c")
    assert config.allowed_service_accounts == ("t1", "t2")
