"""`make demo`: the whole product on this machine, with no cluster and no GPU.

Starts the local control plane and node agent, installs the CRD, runs the operator as its
own process (as it runs in a cluster), generates a tiny gpt-oss model and dataset onto an
input PVC, applies examples/finetunejob-tiny.yaml, follows the FineTuneJob like
`kubectl get ftj -w`, and prints where the adapter is and what its manifest holds."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from finetune_localcluster.cluster import LocalCluster, gpu_nodes
from finetune_localcluster.processes import ManagedProcess, install_signal_handlers

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "finetunejob-tiny.yaml"
CRD = REPO / "crds" / "finetunejobs.yaml"
NAMESPACE = "demo"
NAME = "tiny-gpt-oss"


def say(text: str) -> None:
    print(f"==> {text}", flush=True)


def shown(path: Path) -> str:
    """A path as the demo prints it: inside the repository relative to its root (as the
    README names files, and where `make demo` runs), anything else relative to the working
    directory; never an absolute path, which would only be true of one machine."""
    if path.is_relative_to(REPO):
        return str(path.relative_to(REPO))
    return os.path.relpath(path)


def _columns(body: dict[str, Any]) -> tuple[str, ...]:
    status = body.get("status") or {}
    progress = status.get("progress") or {}
    # The columns `kubectl get ftj` prints (the CRD's printer columns).
    return (
        status.get("phase") or "",
        progress.get("summary") or "",
        progress.get("lossDisplay") or "",
        str(progress.get("eta", "")),
        status.get("reason") or "",
    )


def follow(cluster: LocalCluster, timeout: float) -> dict[str, Any]:
    """Print a row whenever what `kubectl get ftj` shows changes; return the final object."""
    row = "{:<14} {:<10} {:<9} {:<8} {:<6} {}"
    print(row.format("NAME", "PHASE", "PROGRESS", "LOSS", "ETA", "REASON"), flush=True)
    deadline = time.monotonic() + timeout
    last: tuple[str, ...] = ()
    while time.monotonic() < deadline:
        out = cluster.kubectl(["-n", NAMESPACE, "get", "ftj", NAME, "-o", "json"], check=False)
        if out.returncode == 0:
            body = json.loads(out.stdout)
            cols = _columns(body)
            if cols[0] and cols != last:
                print(row.format(NAME, *cols), flush=True)
                last = cols
            if cols[0] in ("Succeeded", "Failed"):
                return dict(body)
        time.sleep(1)
    raise SystemExit(f"the FineTuneJob did not finish within {timeout:.0f}s")


def host_path(uri: str, claims: dict[str, Path]) -> Path:
    """pvc://claim/path -> the PV's directory on this machine."""
    claim, _, rest = uri.removeprefix("pvc://").partition("/")
    return claims[claim] / rest


def run(args: argparse.Namespace) -> int:
    state = Path(args.state_dir).resolve()
    # Each demo starts from scratch: a cluster, volumes and logs of its own.
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    say(f"starting the local control plane and node agent (state in {shown(state)})")
    with LocalCluster(state / "cluster", nodes=gpu_nodes(1, 1)) as cluster:
        say(f"export KUBECONFIG={shown(cluster.kubeconfig)}")
        cluster.kubectl(["apply", "--server-side", "-f", str(CRD)])
        cluster.kubectl(["wait", "--for=condition=Established", "crd/finetunejobs.finetune.dev"])
        cluster.create_namespace(NAMESPACE, {"pod-security.kubernetes.io/enforce": "restricted"})
        claims = {
            name: cluster.make_pvc(NAMESPACE, name, state / "volumes" / name)
            for name in ("demo-inputs", "demo-outputs")
        }
        say("generating a tiny gpt-oss model and a Multilingual-Thinking-shaped dataset")
        from finetune_trainer.fixtures import write_tiny_dataset, write_tiny_model

        write_tiny_model(claims["demo-inputs"] / "tiny-gpt-oss")
        write_tiny_dataset(claims["demo-inputs"] / "multilingual-thinking-tiny.jsonl", rows=64)
        operator_log = state / "operator.log"
        say(f"starting the operator (log: {shown(operator_log)})")
        env = {
            **os.environ,
            "FTO_PROGRESS_POLL_SECONDS": "2",
            "FTO_LIVENESS_ENDPOINT": "",
            "FTO_TRAINER_GRACE_PERIOD_SECONDS": "60",
        }
        # A managed process: stopped on every way out of this block (a timeout included),
        # and killed by the kernel if the demo itself is killed.
        operator = ManagedProcess(
            "operator",
            [sys.executable, "-m", "finetune_operator", "--kubeconfig", str(cluster.kubeconfig)],
            operator_log,
            env=env,
        )
        operator.start()
        try:
            say(f"kubectl apply -f {shown(EXAMPLE)}")
            cluster.kubectl(["apply", "-f", str(EXAMPLE)])
            body = follow(cluster, args.timeout)
        finally:
            operator.stop(timeout=30)
        return report(cluster, body, claims)


def report(cluster: LocalCluster, body: dict[str, Any], claims: dict[str, Path]) -> int:
    status = body.get("status") or {}
    if status.get("phase") != "Succeeded":
        say(f"the FineTuneJob failed: {status.get('reason')}: {status.get('message')}")
        return 1
    adapter_uri = status["output"]["adapterUri"]
    adapter = host_path(adapter_uri, claims)
    manifest = json.loads((adapter / "manifest.json").read_text())
    say(f"adapter: {adapter_uri}")
    say(f"on this machine: {shown(adapter)}")
    checkpoint = status.get("checkpoint") or {}
    say(f"newest checkpoint: step {checkpoint.get('step')} at {checkpoint.get('uri')}")
    files = manifest.get("files") or []
    say(
        f"manifest: {len(files)} files, step {manifest.get('step')}, "
        f"config fingerprint {manifest.get('fingerprint')}"
    )
    for entry in files:
        print(f"    {entry['path']:<28} {entry['size']:>10} bytes  sha256 {entry['sha256'][:12]}")
    listed = cluster.kubectl(
        [
            "-n",
            NAMESPACE,
            "get",
            "events",
            "--field-selector",
            f"involvedObject.name={NAME}",
            "-o",
            "json",
        ]
    )
    # resourceVersion orders events by creation more finely than their 1 s timestamps.
    events = sorted(
        json.loads(listed.stdout)["items"], key=lambda e: int(e["metadata"]["resourceVersion"])
    )
    say("events on the FineTuneJob:")
    for event in events:
        print(f"    {event['type']:<8} {event['reason']:<20} {event['message']}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m finetune_localcluster.demo")
    parser.add_argument("--state-dir", default=".work/demo", help="state, volumes and logs")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait")
    args = parser.parse_args(argv)
    # SIGTERM/SIGHUP stop the pods, the operator and the control plane before the demo dies.
    install_signal_handlers()
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
