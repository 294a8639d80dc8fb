"""Checkpoints and outputs: durable local commits with manifests, S3 upload and download,
rotation, and the ``latest`` pointer. boto3 loads only when an S3 location is used."""
