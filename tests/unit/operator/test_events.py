"""Events repeat as one object with a count, as client-go's recorder does."""

from __future__ import annotations

from typing import Any

from finetune_operator.events import EventRecorder

from .conftest import body


class Sink:
    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self.patched: list[tuple[str, dict[str, Any]]] = []
        self.gone: set[str] = set()

    def create_event(self, namespace: str, event: dict[str, Any]) -> str | None:
        self.created.append(event)
        return f"e{len(self.created)}"

    def patch_event(self, namespace: str, name: str, patch: dict[str, Any]) -> bool:
        if name in self.gone:
            return False
        self.patched.append((name, patch))
        return True


def test_a_repeat_counts_on_the_same_event() -> None:
    sink, now = Sink(), [0.0]
    recorder = EventRecorder(sink, clock=lambda: now[0])
    for step in (10, 20, 30):
        now[0] += 60
        recorder.record(body(), "Normal", "Checkpoint", f"checkpoint at step {step}", "T")
        recorder.flush()
    assert len(sink.created) == 1
    assert [p["count"] for _, p in sink.patched] == [2, 3]
    assert sink.patched[-1][1]["message"] == "checkpoint at step 30"


def test_another_reason_or_a_quiet_spell_starts_a_new_event() -> None:
    sink, now = Sink(), [0.0]
    recorder = EventRecorder(sink, window=600, clock=lambda: now[0])
    recorder.record(body(), "Normal", "Suspended", "suspended", "T")
    recorder.record(body(), "Normal", "Running", "training", "T")
    recorder.flush()
    now[0] = 1000.0
    recorder.record(body(), "Normal", "Suspended", "suspended", "T")
    recorder.flush()
    assert [e["reason"] for e in sink.created] == ["Suspended", "Running", "Suspended"]


def test_an_event_the_api_server_expired_is_posted_again() -> None:
    sink = Sink()
    recorder = EventRecorder(sink)
    recorder.record(body(), "Warning", "Restarted", "restart 1", "T")
    recorder.flush()
    sink.gone.add("e1")
    recorder.record(body(), "Warning", "Restarted", "restart 2", "T")
    recorder.flush()
    assert len(sink.created) == 2


def test_what_it_remembers_is_bounded_and_messages_are_safe() -> None:
    sink = Sink()
    recorder = EventRecorder(sink, remember=10)
    for index in range(50):
        ftj = body(name=f"run-{index}")
        ftj["metadata"]["uid"] = f"uid-{index}"
        recorder.record(ftj, "Normal", "Running", "\x1b[2J" + "x" * 5000, "T")
    recorder.flush()
    assert len(recorder._posted) == 10
    message = sink.created[0]["message"]
    assert len(message) <= 1024 and "\x1b" not in message


def test_a_thread_posts_them_and_a_full_backlog_drops_the_oldest() -> None:
    sink = Sink()
    posted: list[tuple[str, str]] = []
    dropped: list[None] = []
    recorder = EventRecorder(
        sink,
        backlog=3,
        posted=lambda kind, reason: posted.append((kind, reason)),
        dropped=lambda: dropped.append(None),
    )
    for index in range(5):
        recorder.record(body(), "Normal", f"Reason{index}", "m", "T")
    assert recorder.dropped == 2 and len(dropped) == 2
    assert posted == []  # queued is not posted
    recorder.start()
    recorder.flush()
    recorder.stop()
    assert [e["reason"] for e in sink.created] == ["Reason2", "Reason3", "Reason4"]
    assert posted == [("Normal", "Reason2"), ("Normal", "Reason3"), ("Normal", "Reason4")]


def test_a_deleted_finetunejobs_waiting_events_are_not_posted() -> None:
    sink = Sink()
    recorder = EventRecorder(sink)
    recorder.record(body(), "Normal", "Running", "training", "T")
    recorder.forget(body()["metadata"]["uid"])
    recorder.flush()
    assert sink.created == []
