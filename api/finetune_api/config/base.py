"""The base model every schema section derives from, and the constrained string types.

One model serves three readers: the trainer parsing its config file, the operator parsing a
FineTuneJob's spec, and the CRD generator. Keys are camelCase on the wire (the Kubernetes
convention) and snake_case is accepted too, so the original example's ``config.yaml`` keeps
working. Unknown keys are errors: a typo must never be silently ignored in a training run
that costs GPU hours.

Patterns are written for both pydantic (Rust regex) and the API server (Go RE2), so they
use no look-around; what a pattern cannot say is a validator here and a CEL rule in the CRD.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints, WithJsonSchema
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

# Length limits of the locations a spec may name; the status fields that report locations
# under them (checkpoint and adapter URIs) are sized from these.
MAX_K8S_NAME = 253
MAX_RELATIVE_PATH = 1024
MAX_LOCAL_PATH = 4096
MAX_S3_URI = 1024
MAX_ENDPOINT_URL = 2048


class SpecModel(BaseModel):
    """Base for every section of the FineTuneJob spec and the trainer config."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The camelCase dict a FineTuneJob or a trainer config file holds."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def cel(rule: str, message: str) -> JsonDict:
    """One ``x-kubernetes-validations`` entry."""
    return {"rule": rule, "message": message}


# A NUL byte cannot be part of a file name, and the layers below (the C library, S3 keys,
# YAML round trips) each treat it differently: refused in every path, URI and name field.
_NUL_MESSAGE = "must not contain a NUL character"


def nul_rule() -> JsonDict:
    """The CEL rule refusing a NUL character (an escape in the rule's text, not a NUL)."""
    return cel("!self.contains('\\u0000')", _NUL_MESSAGE)


_NUL_RULE = nul_rule()


def no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError(_NUL_MESSAGE)
    return value


def _no_parent_segments(value: str) -> str:
    if ".." in value.split("/"):
        raise ValueError("must not contain a '..' segment; give a path inside the volume")
    return value


# Kubernetes object names (DNS-1123 subdomain, RFC 1123).
K8sName = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=MAX_K8S_NAME, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
    ),
]
# Keys inside a Secret or ConfigMap.
K8sKey = Annotated[
    str, StringConstraints(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")
]
# A relative path inside a volume: no leading slash, no '..' segment.
RelativePath = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_RELATIVE_PATH, pattern=r"^[^/].*$"),
    AfterValidator(no_nul),
    AfterValidator(_no_parent_segments),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_RELATIVE_PATH,
            "pattern": r"^[^/].*$",
            "x-kubernetes-validations": [
                _NUL_RULE,
                cel("!('..' in self.split('/'))", "must not contain a '..' segment"),
            ],
        }
    ),
]
# A local filesystem path, absolute or relative to the working directory. (A FineTuneJob
# takes absolute ones only: see finetune_api.spec.)
LocalPath = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_LOCAL_PATH),
    AfterValidator(no_nul),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_LOCAL_PATH,
            "x-kubernetes-validations": [_NUL_RULE],
        }
    ),
]
# A Hugging Face Hub repository id: "name" or "owner/name".
HubRepoId = Annotated[
    str,
    StringConstraints(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$",
    ),
]
_S3_URI_PATTERN = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$"
# S3 keys are not paths, but the trainer stages and downloads them as paths: a '..' would
# leave the staging or download directory, and a '.' names the same place as its parent.
_S3_DOT_SEGMENTS_MESSAGE = (
    "must not contain a '.' or '..' segment; name the prefix without them, e.g. "
    "s3://bucket/runs/a rather than s3://bucket/runs/x/../a"
)


def _no_dot_segments(value: str) -> str:
    if {".", ".."} & set(value.split("/")):
        raise ValueError(_S3_DOT_SEGMENTS_MESSAGE)
    return value


# An s3://bucket/key-prefix URI.
S3Uri = Annotated[
    str,
    StringConstraints(min_length=8, max_length=MAX_S3_URI, pattern=_S3_URI_PATTERN),
    AfterValidator(no_nul),
    AfterValidator(_no_dot_segments),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 8,
            "maxLength": MAX_S3_URI,
            "pattern": _S3_URI_PATTERN,
            "x-kubernetes-validations": [
                _NUL_RULE,
                cel(
                    "self.split('/').all(s, s != '.' && s != '..')",
                    _S3_DOT_SEGMENTS_MESSAGE,
                ),
            ],
        }
    ),
]
_ENDPOINT_PATTERN = r"^https?://[^\s/]+(/\S*)?$"
# user:password@ before the host: the URL would carry a credential into the ConfigMap and
# the FineTuneJob, which anyone who can read them would see.
_ENDPOINT_USERINFO = r"^https?://[^/?#]*@"
_ENDPOINT_CREDENTIALS_MESSAGE = (
    "must not carry credentials (user:password@host); put them in a Secret named by "
    "credentialsSecretRef"
)


def _no_userinfo(value: str) -> str:
    if re.match(_ENDPOINT_USERINFO, value):
        raise ValueError(_ENDPOINT_CREDENTIALS_MESSAGE)
    return value


# An http(s) endpoint URL, for S3-compatible stores.
EndpointUrl = Annotated[
    str,
    StringConstraints(min_length=8, max_length=MAX_ENDPOINT_URL, pattern=_ENDPOINT_PATTERN),
    AfterValidator(no_nul),
    AfterValidator(_no_userinfo),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 8,
            "maxLength": MAX_ENDPOINT_URL,
            "pattern": _ENDPOINT_PATTERN,
            "x-kubernetes-validations": [
                _NUL_RULE,
                cel(f"!self.matches('{_ENDPOINT_USERINFO}')", _ENDPOINT_CREDENTIALS_MESSAGE),
            ],
        }
    ),
]
# Free-form names: a Hub revision or dataset configuration, an S3 region.
ShortString = Annotated[
    str,
    StringConstraints(min_length=1, max_length=253),
    AfterValidator(no_nul),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": 253,
            "x-kubernetes-validations": [_NUL_RULE],
        }
    ),
]
