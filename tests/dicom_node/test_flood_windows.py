"""Repeated events per source: the first of a window in full, the rest counted into one summary."""

from __future__ import annotations

import time

from dicom_node.flood_windows import FloodWindows


def test_first_event_opens_a_window_and_the_rest_are_counted_by_kind() -> None:
    windows = FloodWindows(window_s=60.0)
    assert windows.record(("10.0.0.1",), "timeout", reason="first") == (True, [])
    assert windows.record(("10.0.0.1",), "timeout", reason="second") == (False, [])
    assert windows.record(("10.0.0.1",), "not-dicom", reason="third") == (False, [])
    assert windows.record(("10.0.0.2",), "timeout", reason="other source")[0] is True
    (first, other) = windows.take_due(everything=True)
    assert first.first == {"reason": "first"} and first.latest == {"reason": "third"}
    assert first.counts == {"timeout": 1, "not-dicom": 1} and first.suppressed == 2
    assert other.suppressed == 0 and windows.take_due(everything=True) == []


def test_a_window_that_is_over_is_handed_back_and_the_next_event_opens_a_new_one() -> None:
    windows = FloodWindows(window_s=0.05)
    windows.record("peer", "x")
    windows.record("peer", "x")
    time.sleep(0.06)
    opened, ended = windows.record("peer", "x")
    assert opened and [window.suppressed for window in ended] == [1]


def test_too_many_open_windows_are_summarised_early() -> None:
    windows = FloodWindows(window_s=60.0, max_open=3)
    for peer in ("a", "b", "c"):
        windows.record(peer)
    opened, ended = windows.record("d")
    assert opened and sorted(window.key for window in ended) == ["a", "b", "c"]
