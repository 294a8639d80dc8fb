"""The parts of an S3 output target (targets.S3Target): the output prefix on S3, the local
staging directory, the background uploads, the rotation of old checkpoints, the ``latest``
pointer, and the download of a checkpoint to resume from."""
