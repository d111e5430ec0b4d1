"""Restarting a child process that died: at once after a long life, backing off while it keeps dying young."""

from __future__ import annotations

from dicom_node.restarts import QUICK_DEATH_S, RESTART_BACKOFF_S, RestartSchedule


def test_a_process_that_keeps_dying_young_is_restarted_later_each_time() -> None:
    schedule = RestartSchedule(started=0.0)
    now, delays = 1.0, []
    for _ in range(5):
        delay = schedule.died(now)
        assert delay is not None and schedule.died(now) is None  # one death is counted once
        assert delay > 0 and not schedule.due(now + delay - 0.01)
        delays.append(delay)
        now += delay
        assert schedule.due(now)
        schedule.restarted(now)
        assert not schedule.due(now)
        now += 1.0
    assert delays == [RESTART_BACKOFF_S[1], RESTART_BACKOFF_S[2], RESTART_BACKOFF_S[3], RESTART_BACKOFF_S[3],
                      RESTART_BACKOFF_S[3]]


def test_a_process_that_lived_long_is_restarted_at_once_and_its_count_starts_over() -> None:
    schedule = RestartSchedule(started=0.0, quick_deaths=3)
    assert schedule.died(QUICK_DEATH_S + 1.0) == 0.0
    assert schedule.quick_deaths == 0 and schedule.due(QUICK_DEATH_S + 1.0)
