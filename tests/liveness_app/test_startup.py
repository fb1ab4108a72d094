"""The launch-to-first-verdict trace (liveness_app.startup): one trace per process."""
from __future__ import annotations

from liveness_app import startup


def test_a_stage_marked_once_is_not_marked_again_by_a_later_session():
    stage = "test stage (once)"
    assert startup.mark_once(stage) is True
    assert startup.mark_once(stage) is False  # a restarted pipeline / second window starts no new trace
    assert [s for s, _ in startup.marks()].count(stage) == 1
    t = dict(startup.marks())[stage]
    assert 0.0 < t < 1e6 and startup.summary().startswith("start-up: ")
