"""``finetune-train``: the trainer's command line.

Reads one config file (the FineTuneJob's training spec, or the original example's
``config.yaml``), applies the container's overrides, then trains or, with ``--dry-run``,
validates the config and the data and prints the plan. Exit codes follow
``contract.ExitCode``; a termination message is written on every exit.

Only the standard library, pydantic and PyYAML load before the config is known to be good:
``--help`` and config errors never import torch.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from pydantic import ValidationError

from finetune_api.config import OutputSpec, TrainerConfig, describe_errors
from finetune_api.contract import CONFIG_PATH, Env, ExitCode, TerminationMessage, TrainerReason

from . import __version__
from .config_overrides import apply_assignments
from .errors import InvalidConfig, InvalidInput
from .progress_bars import silence_progress_bars_off_a_terminal
from .remote_errors import TRACEBACK_LIMIT, bounded, failure_summary
from .runtime import RuntimeOptions
from .signals import Interrupted
from .termination import exit_code_for, write_termination_message

log = logging.getLogger("finetune_trainer")


class ArgumentParser(argparse.ArgumentParser):
    """argparse exits 2 on a bad argument, with no termination message; the Job would retry
    that and the user would see only the exit code. Raising InvalidConfig instead makes it
    exit 78 with a message like any other config error (--help still exits 0)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        raise InvalidConfig(f"command line: {message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="finetune-train",
        description="Fine-tune a causal LM with LoRA (Unsloth on CUDA, transformers + PEFT "
        "elsewhere), checkpointing to a directory, a PVC or S3 and resuming after failures.",
        epilog=f"Exit codes: {ExitCode.SUCCEEDED} done, {ExitCode.INVALID_INPUT} bad config or "
        f"data (not retried), {ExitCode.INTERRUPTED} interrupted by SIGTERM after a "
        f"checkpoint, {ExitCode.FAILED} anything else (retried, resuming).",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help=f"Config file (YAML). Default: ${Env.CONFIG}, else {CONFIG_PATH}.",
    )
    parser.add_argument(
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="Change one field of the config file, spelled as in the file (repeatable; "
        "the value is YAML): --set training.maxSteps=5 --set lora.rank=16.",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        help=f"Write checkpoints and the adapter to this local directory instead of the "
        f"config's output (also ${Env.OUTPUT_DIR}).",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="Validate the config and the data (tokenizer and rows, no model weights) and "
        "print the plan: rows, tokens, steps, epochs, a GPU memory estimate.",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        help=f"Port of the Prometheus endpoint; 0 disables it (also ${Env.METRICS_PORT}; "
        "default 9090).",
    )
    parser.add_argument(
        "--metrics-host",
        help=f"Bind address of the metrics endpoint (also ${Env.METRICS_HOST}, else "
        f"${Env.POD_IP}, else 0.0.0.0).",
    )
    parser.add_argument(
        "--backend",
        choices=("auto", "unsloth", "transformers"),
        default="auto",
        help="auto: Unsloth when a CUDA GPU and Unsloth are available, else transformers + "
        "PEFT. Default: auto.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def setup_logging() -> None:
    """Logs on stderr, for people or (``FTO_LOG_FORMAT=json``) one JSON object a line for
    log pipelines; stdout carries the JSON step records and the plan either way."""
    wanted = os.environ.get(Env.LOG_FORMAT, "plain") or "plain"
    handler = logging.StreamHandler(sys.stderr)
    if wanted == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    if wanted not in ("plain", "json"):
        log.warning("%s must be plain or json, not %r: logging plain", Env.LOG_FORMAT, wanted[:40])


def config_path(arg: Path | None) -> Path:
    if arg is not None:
        return arg
    env = os.environ.get(Env.CONFIG)
    if env:
        return Path(env)
    if Path(CONFIG_PATH).is_file():
        return Path(CONFIG_PATH)
    raise InvalidConfig(
        f"no config file: pass --config, or set {Env.CONFIG}, or mount one at {CONFIG_PATH}",
        reason=TrainerReason.CONFIG_NOT_FOUND,
    )


def load_config(path: Path, assignments: Sequence[str] = ()) -> TrainerConfig:
    """Parse the config file, apply the ``--set`` assignments, and validate; every problem
    is printed, then InvalidConfig."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return TrainerConfig.from_mapping(apply_assignments(data, assignments) or {})
    except FileNotFoundError:
        raise InvalidConfig(
            f"config file {path} does not exist", reason=TrainerReason.CONFIG_NOT_FOUND
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidConfig(f"config file {path} cannot be read: {exc}") from None
    except yaml.YAMLError as exc:
        raise InvalidConfig(f"config file {path} is not valid YAML: {exc}") from None
    except ValidationError as exc:
        problems = describe_errors(exc)
        print(f"invalid config {path}:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        raise InvalidConfig("; ".join(problems)) from None


def apply_overrides(config: TrainerConfig, output_dir: Path | None) -> TrainerConfig:
    """--output-dir or $FTO_OUTPUT_DIR replaces the config's output target."""
    target = output_dir or (
        Path(os.environ[Env.OUTPUT_DIR]) if os.environ.get(Env.OUTPUT_DIR) else None
    )
    if target is None:
        return config
    if config.output.target_kind != "path":
        log.info(
            "output overridden to %s (the config's output.%s is not used)",
            target,
            config.output.target_kind,
        )
    output = OutputSpec(path=str(target), merged_export=config.output.merged_export)
    return config.model_copy(update={"output": output})


def run(argv: Sequence[str] | None = None) -> TerminationMessage:
    """Parse arguments, then validate, dry-run or train; never raises for expected errors."""
    setup_logging()
    silence_progress_bars_off_a_terminal()
    try:
        args = build_parser().parse_args(argv)
        runtime = RuntimeOptions.from_env(
            metrics_host=args.metrics_host, metrics_port=args.metrics_port, backend=args.backend
        )
        config = apply_overrides(
            load_config(config_path(args.config), args.assignments), args.output_dir
        )
    except InvalidInput as exc:
        log.error("%s", exc)
        return TerminationMessage(status="invalid_input", reason=exc.reason, message=str(exc))
    except ValueError as exc:  # a malformed port in the environment, for example
        log.error("%s", exc)
        return TerminationMessage(
            status="invalid_input", reason=TrainerReason.INVALID_CONFIG, message=str(exc)
        )
    try:
        if args.dry_run:
            return _dry_run(config, runtime)
        from .train import main as train_main

        return train_main(config, runtime)
    finally:
        runtime.remove_own_scratch()


def _dry_run(config: TrainerConfig, runtime: RuntimeOptions) -> TerminationMessage:
    from .dry_run import dry_run

    try:
        return dry_run(config, runtime)
    except Exception as exc:  # say what failed in the termination message, too
        import traceback

        log.error("the dry run failed:\n%s", bounded(traceback.format_exc(), TRACEBACK_LIMIT))
        return TerminationMessage(
            status="failed", reason=TrainerReason.DRY_RUN_FAILED, message=failure_summary(exc)
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point: run, write the termination message, return the code."""
    try:
        message = run(argv)
    except Interrupted as exc:
        # Stop signals are handled inside the run; one that lands outside those handlers
        # (on an error path, say) still ends with a message and the interrupted code.
        log.warning("%s; exiting", exc)
        message = TerminationMessage(
            status="interrupted", reason=TrainerReason.INTERRUPTED, message=str(exc)
        )
    # The runtime may not exist when the arguments were bad; recompute the path cheaply.
    from .termination import termination_path

    write_termination_message(message, termination_path())
    return int(exit_code_for(message))


if __name__ == "__main__":
    sys.exit(main())
