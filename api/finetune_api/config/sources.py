"""Where bytes come from and go to: Secret references, PVC paths and S3 locations.

Secrets are referenced, never copied: the operator turns a reference into an environment
variable with ``valueFrom.secretKeyRef`` and the trainer reads the variable. PVC paths are
resolved by the trainer under a fixed mount root (``contract.PVC_MOUNT_ROOT``) where the
operator mounts each referenced claim, so the trainer's config file is the spec verbatim.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, WithJsonSchema

from .base import (
    EndpointUrl,
    K8sKey,
    K8sName,
    RelativePath,
    S3Uri,
    ShortString,
    SpecModel,
    cel,
)


class SecretKeyRef(SpecModel):
    """A key in a Secret in the FineTuneJob's namespace."""

    name: K8sName = Field(description="Name of the Secret.")
    key: K8sKey = Field(description="Key inside the Secret.")


class S3CredentialsRef(SpecModel):
    """A Secret holding S3 credentials. The operator never reads it; the trainer pod gets its
    keys as environment variables."""

    name: K8sName = Field(description="Name of the Secret with the S3 credentials.")
    access_key_id_key: K8sKey = Field(
        "AWS_ACCESS_KEY_ID", description="Key of the access key id. Default: AWS_ACCESS_KEY_ID."
    )
    secret_access_key_key: K8sKey = Field(
        "AWS_SECRET_ACCESS_KEY",
        description="Key of the secret access key. Default: AWS_SECRET_ACCESS_KEY.",
    )
    session_token_key: K8sKey | None = Field(
        None, description="Key of an optional session token (temporary credentials)."
    )


class S3Location(SpecModel):
    """An object-store prefix on S3 or an S3-compatible server."""

    uri: S3Uri = Field(description="s3://bucket/prefix.")
    endpoint: EndpointUrl | None = Field(
        None,
        description="Endpoint URL of an S3-compatible store (MinIO, Ceph, versitygw). "
        "Empty means AWS S3.",
    )
    region: ShortString | None = Field(None, description="Region; empty uses the SDK default.")
    credentials_secret_ref: S3CredentialsRef | None = Field(
        None,
        description="Secret with the credentials. Empty uses the pod's ambient credentials "
        "(IRSA, workload identity, instance profile).",
    )

    @property
    def bucket(self) -> str:
        return self.uri[len("s3://") :].split("/", 1)[0]

    @property
    def prefix(self) -> str:
        parts = self.uri[len("s3://") :].split("/", 1)
        return parts[1].strip("/") if len(parts) > 1 else ""


class PvcPath(SpecModel):
    """A path inside a PersistentVolumeClaim in the FineTuneJob's namespace."""

    claim_name: K8sName = Field(description="Name of the PersistentVolumeClaim.")
    path: RelativePath | None = Field(
        None, description="Path inside the claim. Empty means the claim's root."
    )
    read_only: bool = Field(
        True, description="Mount the claim read-only. Outputs are always mounted read-write."
    )


_DATA_FILE_KEY_MESSAGE = (
    "must end in .jsonl or .json: the trainer reads the key as the file of that format "
    "(for example train.jsonl)"
)


def _data_file_key(key: str) -> str:
    if not key.endswith((".jsonl", ".json")):
        raise ValueError(_DATA_FILE_KEY_MESSAGE)
    return key


# A ConfigMap key the trainer reads as a data file: refused at admission when its name
# does not say the format, rather than failing the run once its pod has started.
DataFileKey = Annotated[
    K8sKey,
    AfterValidator(_data_file_key),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": 253,
            "pattern": r"^[-._a-zA-Z0-9]+$",
            "x-kubernetes-validations": [
                cel("self.endsWith('.jsonl') || self.endsWith('.json')", _DATA_FILE_KEY_MESSAGE)
            ],
        }
    ),
]


class ConfigMapKey(SpecModel):
    """A dataset held inline in a ConfigMap key (JSON Lines), for small datasets and tests."""

    name: K8sName = Field(description="Name of the ConfigMap.")
    key: DataFileKey = Field(
        description="Key holding the data, named for its format: train.jsonl or train.json."
    )
