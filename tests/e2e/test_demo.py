"""`make demo`, the README's first command, as a user runs it: its own control plane,
operator process and trainer, from `kubectl apply` to an adapter whose files verify."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from finetune_localcluster.binaries import Binaries

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def test_the_demo_trains_the_example_and_shows_where_the_adapter_is(
    localcluster_binaries: Binaries, tmp_path: Path
) -> None:
    # Started outside the repository with a relative state directory, as a user may: the
    # output names the state relative to where the demo was started.
    result = subprocess.run(
        [sys.executable, "-m", "finetune_localcluster.demo", "--state-dir", "demo"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    out = result.stdout
    # Paths are printed relative (the repository's files to its root, the rest to the
    # working directory): no absolute path, which would be true of one machine only.
    assert str(tmp_path) not in out and str(REPO) not in out, out
    assert not re.findall(r"(?:^|[\s=(])/[^\s)]*", out, re.MULTILINE), out
    assert "==> starting the local control plane and node agent (state in demo)" in out
    assert "==> export KUBECONFIG=demo/cluster/admin.kubeconfig" in out
    assert "==> kubectl apply -f examples/finetunejob-tiny.yaml" in out
    assert re.search(r"^tiny-gpt-oss +Succeeded +12/12 ", out, re.MULTILINE), out
    assert "==> adapter: pvc://demo-outputs/demo/tiny-gpt-oss-" in out
    where = re.search(r"^==> on this machine: (.+)$", out, re.MULTILINE)
    assert where, out
    assert where[1].startswith("demo/volumes/demo-outputs/"), out
    adapter = tmp_path / where[1]
    assert adapter.name == "final_model"
    manifest = json.loads((adapter / "manifest.json").read_text())
    assert (
        manifest["step"] == 12 and f"step 12, config fingerprint {manifest['fingerprint']}" in out
    )
    for entry in manifest["files"]:
        data = (adapter / entry["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["path"]
        assert f"sha256 {entry['sha256'][:12]}" in out
    assert re.search(r"Normal +Succeeded +Succeeded: training finished", out), out
