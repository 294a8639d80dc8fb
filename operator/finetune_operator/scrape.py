"""Read one trainer pod's metrics endpoint, on a budget a hostile pod cannot stretch.

The pod's image is the tenant's choice, so its endpoint may answer slowly, endlessly or
with garbage. Each scrape therefore has a total deadline (aiohttp's ``total`` timeout covers
connecting, the headers and the whole body, unlike a per-read socket timeout that a server
sending one byte a second never trips), a cap on the body (real expositions are under
2 KiB), and a maintained parser (prometheus_client's). Whatever goes wrong, the answer is
None: no progress this time.
"""

from __future__ import annotations

import math

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from finetune_api import contract
from finetune_api.contract import STAGE_LABEL, Metric, TrainerProgress, TrainerStage

# Real expositions are under 2 KiB; room for more gauges, never for a flood.
MAX_BODY_BYTES = 16 * 1024

_FIELDS: dict[str, tuple[str, type[int] | type[float]]] = {
    Metric.STEP: ("step", int),
    Metric.TOTAL_STEPS: ("total_steps", int),
    Metric.EPOCH: ("epoch", float),
    Metric.LOSS: ("loss", float),
    Metric.LEARNING_RATE: ("learning_rate", float),
    Metric.GRAD_NORM: ("grad_norm", float),
    Metric.TOKENS_PER_SECOND: ("tokens_per_second", float),
    Metric.CHECKPOINT_STEP: ("checkpoint_step", int),
    Metric.EVAL_LOSS: ("eval_loss", float),
}
_STAGES = frozenset(stage.value for stage in TrainerStage)
# Numbers beyond these are not a training run's: a step count or a loss from a
# misbehaving endpoint must not become a status the API server refuses (int64) or a
# printer column nobody can read.
_LIMITS: dict[type, float] = {int: 2**53, float: 1e30}


def bounded_number(value: float, kind: type[int] | type[float]) -> int | float | None:
    """``value`` as a ``kind``, or None when it is no training run's number: NaN (in a
    status, JSON the API server refuses), an infinity, or beyond _LIMITS. The one rule for
    every number a trainer reports, by its metrics or its termination message."""
    try:
        number = float(value)
    except OverflowError:  # an int beyond any float
        return None
    if not math.isfinite(number) or abs(number) > _LIMITS[kind]:
        return None
    return int(number) if kind is int else number


def metrics_url(pod_ip: str, port: int = contract.METRICS_PORT) -> str:
    host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
    return f"http://{host}:{port}{contract.METRICS_PATH}"


def parse_progress(text: str) -> TrainerProgress:
    """The contract's gauges from a Prometheus text exposition. Unknown metrics, labelled
    samples, NaN (a gauge not yet set), infinities and absurd values are left out; text the
    parser refuses yields what was read before the error. The stage is the state-set
    sample of value 1 whose label names a TrainerStage."""
    values: dict[str, float | int | str] = {}
    # Only the contract's own samples reach the parser: whatever else an endpoint sends
    # costs a split per line, not a parse, in the event loop every FineTuneJob shares.
    wanted = "\n".join(line for line in text.splitlines() if _sample_name(line) in _WANTED)
    try:
        for family in text_string_to_metric_families(wanted):
            for sample in family.samples:
                if sample.name == Metric.STAGE:
                    stage = sample.labels.get(STAGE_LABEL)
                    if sample.value == 1 and stage in _STAGES and len(sample.labels) == 1:
                        values["stage"] = stage
                    continue
                field = _FIELDS.get(sample.name)
                if field is None or sample.labels:
                    continue
                name, kind = field
                value = bounded_number(float(sample.value), kind)
                if value is not None:
                    values[name] = value
    except (ValueError, TypeError, IndexError, KeyError):
        pass  # a malformed exposition: keep what came before the bad line
    return TrainerProgress.model_validate(values)


_WANTED = frozenset((*_FIELDS, Metric.STAGE))


def _sample_name(line: str) -> str:
    """The metric name a sample line starts with (before its labels or its value)."""
    return line.split(" ", 1)[0].split("{", 1)[0]


async def scrape(
    session: aiohttp.ClientSession,
    pod_ip: str,
    *,
    deadline: float,
    max_bytes: int = MAX_BODY_BYTES,
    port: int = contract.METRICS_PORT,
) -> TrainerProgress | None:
    """GET the pod's metrics within ``deadline`` seconds in all; None when it is not
    answering (still loading, between attempts), too slow, too large or not metrics."""
    timeout = aiohttp.ClientTimeout(total=deadline)
    try:
        async with session.get(
            metrics_url(pod_ip, port), timeout=timeout, allow_redirects=False
        ) as response:
            if response.status != 200:
                return None
            if (response.content_length or 0) > max_bytes:
                return None
            body = bytearray()
            while len(body) <= max_bytes:
                chunk = await response.content.read(max_bytes + 1 - len(body))
                if not chunk:
                    break
                body += chunk
            if len(body) > max_bytes:
                return None
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
        return None
    return parse_progress(body.decode("utf-8", errors="replace"))
