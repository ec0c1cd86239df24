"""A wall-clock step while recording (NTP or GPS setting a car computer's clock, H16 finding 3):
the recorder stamped log times with the system clock, so a step back of an hour put the second
half of a recording an hour before the first for readers that sort by log time, its statistics
spanned 3600 s, and replay sent everything after the step at once (a 40 s recording in 17.7 s).
Now log times come from the recorder's steady clock (one warning names the step), and replay goes
on from a step back in an older recording as recorded."""

from __future__ import annotations

import logging

import pytest
from test_record import write_small_recording
from test_sources import RecordedWaits

from perception.record import SteadyClock
from perception.replay import ReplayConfig, run_replay

S = 10**9


def test_the_recorders_clock_keeps_its_timeline_when_the_system_clock_steps(caplog):
    wall, mono = [1_000 * S], [5 * S]
    clock = SteadyClock(wall_ns=lambda: wall[0], monotonic_ns=lambda: mono[0])
    times = []
    for step_back in (False, False, True, False):
        mono[0] += S // 2
        wall[0] += S // 2 - (3600 * S if step_back else 0)
        times.append(clock.now_ns())
    assert times == [1_000 * S + k * S // 2 for k in (1, 2, 3, 4)]  # in order, evenly spaced
    assert clock.stepped_s == pytest.approx(-3600)
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(said) == 1 and said[0].startswith("the system clock was set back by 3600.0 s while recording")


def test_drift_below_a_second_is_not_a_step(caplog):
    wall, mono = [1_000 * S], [0]
    clock = SteadyClock(wall_ns=lambda: wall[0], monotonic_ns=lambda: mono[0])
    mono[0], wall[0] = 60 * S, 1_060 * S + S // 2  # 0.5 s of drift in a minute
    assert clock.now_ns() == 1_060 * S and clock.stepped_s == 0 and caplog.records == []


class Sink:
    endpoint = "inproc://sink"

    def __init__(self):
        self.sent = []

    def send(self, msg, stop, *, shift_ns=0):
        self.sent.append(msg.seq)
        return True


def test_replay_goes_on_from_a_step_back_in_the_recorded_times_as_recorded(tmp_path, caplog):
    base = 4_000 * S  # an older recording whose clock was set back an hour after its third frame
    path = tmp_path / "stepped.mcap"
    total = write_small_recording(path, log_times=[base, base + S // 2, base + S, base - 3600 * S + 3 * S // 2,
                                                   base - 3600 * S + 2 * S])
    stop, sink = RecordedWaits(), Sink()
    summary = run_replay(ReplayConfig(file=path), stop, publisher=sink)
    assert summary.messages == total == len(sink.sent)
    # Each wait is the recorded time from the first frame to this message (minus the little time
    # the loop took): the frames after the step keep their 0.5 s spacing; before, every wait after
    # the step stayed at 1.0 s and they went out at once.
    frame_waits = stop.waits[::2]
    assert frame_waits == pytest.approx([0.0, 0.5, 1.0, 1.0, 1.5], abs=0.2)
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(said) == 1 and said[0].startswith("the recorded times step back 3600 s (before ")
