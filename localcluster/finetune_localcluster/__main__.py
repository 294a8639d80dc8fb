"""Command line: `python -m finetune_localcluster up [--state-dir DIR] [--nodes N]
[--gpus-per-node G] [--s3]` starts the local cluster in the foreground, prints how to use
it, and stops everything on Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from finetune_localcluster.binaries import BinariesUnavailable
from finetune_localcluster.cluster import LocalCluster, gpu_nodes


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m finetune_localcluster")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the local cluster until Ctrl-C / SIGTERM")
    up.add_argument("--state-dir", type=Path, help="keep state and logs here (default: temp)")
    up.add_argument("--nodes", type=int, default=2, help="GPU nodes to register (default 2)")
    up.add_argument("--gpus-per-node", type=int, default=2, help="nvidia.com/gpu per node")
    up.add_argument("--s3", action="store_true", help="also start an S3 server (versitygw)")
    up.add_argument("-v", "--verbose", action="store_true", help="log every pod event")
    return parser


def up(args: argparse.Namespace) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Installed before anything starts, so SIGTERM means "stop cleanly" here.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    cluster = LocalCluster(
        args.state_dir,
        nodes=gpu_nodes(args.nodes, args.gpus_per_node),
        with_s3=args.s3,
    )
    try:
        cluster.start()
    except BinariesUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        print(f"local cluster is up; state and logs in {cluster.state_dir}")
        print(f"kubeconfig: {cluster.kubeconfig}")
        print(f"export KUBECONFIG={cluster.kubeconfig}")
        print(f"kubectl: {cluster.control_plane.binaries.kubectl}")
        if cluster.s3 is not None:
            env_file = cluster.state_dir / "s3.env"
            fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.writelines(f"export {k}={v}\n" for k, v in cluster.s3.env().items())
            print(f"S3 endpoint: {cluster.s3.endpoint} (credentials: source {env_file})")
        print("Press Ctrl-C to stop.", flush=True)
        stop.wait()
    finally:
        print("stopping the local cluster...", flush=True)
        cluster.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return up(args)


if __name__ == "__main__":
    sys.exit(main())
