"""The original single-machine example's own ``config.yaml`` trains to an adapter: its
snake_case keys, its relative ``dataset.path: ./my_conversations.json`` with
``format: custom`` and its relative ``output.dir``, read by ``finetune-train --config
config.yaml`` run from the directory that holds them, as a user runs it by hand."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from finetune_api.contract import ExitCode
from finetune_trainer.fixtures import write_custom_text_dataset
from finetune_trainer.storage.manifest import verify_dir

from .cli_helpers import cli_env, json_records, termination
from .test_cli import ORIGINAL_EXAMPLE

ROWS = 64
STEPS = 20  # the example's max_steps, trained as it is

# The example's config.yaml, key for key (test_cli.py's ORIGINAL_EXAMPLE), in the shape
# its own README trains with: the local ./my_conversations.json as a custom dataset. One
# more value changed: model_name named the Hub model unsloth/gpt-oss-20b (a 13 GB download,
# more than a CPU can train); it names the tiny gpt-oss model in the working directory
# instead, as the example's loader allowed (a local directory in model_name is read as
# model.path). Nothing else needs changing for the CPU: load_in_4bit is ignored and
# adamw_8bit becomes adamw_torch there, each with a warning the test checks.
EXAMPLE_CONFIG = ORIGINAL_EXAMPLE.replace(
    "model_name: unsloth/gpt-oss-20b", "model_name: ./tiny-gpt-oss"
).replace(
    "path: HuggingFaceH4/Multilingual-Thinking\n  format: sharegpt",
    "path: ./my_conversations.json\n  format: custom",
)
assert "./tiny-gpt-oss" in EXAMPLE_CONFIG and "./my_conversations.json" in EXAMPLE_CONFIG


def test_the_original_examples_config_trains_to_an_adapter(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    workdir = tmp_path / "example"
    workdir.mkdir()
    shutil.copytree(tiny_model_dir, workdir / "tiny-gpt-oss")
    # A JSON array of {"text": ...} rows: chats already rendered in the harmony format.
    write_custom_text_dataset(workdir / "my_conversations.json", rows=ROWS, fmt="json")
    (workdir / "config.yaml").write_text(EXAMPLE_CONFIG, encoding="utf-8")

    train = Path(sys.executable).with_name("finetune-train")
    assert train.is_file(), f"no finetune-train console script next to {sys.executable}"
    result = subprocess.run(
        # The backend is named so that a machine with a GPU runs the same CPU path.
        [str(train), "--config", "config.yaml", "--backend", "transformers"],
        cwd=workdir,
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == ExitCode.SUCCEEDED, result.stderr[-4000:]

    # The relative dataset.path was read as that local file (not as a Hub dataset id), all
    # of its rows, as ready-made text.
    assert f"loaded {ROWS} rows from my_conversations.json (split train)" in result.stderr
    assert "loadIn4bit is ignored" in result.stderr
    assert "adamw_8bit needs bitsandbytes on a CUDA GPU; using adamw_torch" in result.stderr
    assert [r["step"] for r in json_records(result.stdout)][-1] == STEPS

    # The relative output.dir is under the working directory.
    outputs = workdir / "outputs"
    adapter = verify_dir(outputs / "final_model")
    assert (adapter.kind, adapter.step) == ("final_model", STEPS)
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {f.path for f in adapter.files}
    assert sorted(p.name for p in outputs.glob("checkpoint-*")) == [
        "checkpoint-10",
        "checkpoint-20",
    ]
    message = termination(tmp_path)
    assert message.status == "succeeded" and message.step == STEPS
    assert message.adapter_uri == str(outputs.resolve() / "final_model")
