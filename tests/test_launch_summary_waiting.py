"""The launch's closing summary names a node that was down at the stop, waiting for its restart.

A camera that died once and waits out a long ``respawn_delay`` (up to 3600 s) was missing from the
bottom of the log, read like a node running fine. Stand-in nodes as in test_launch_supervisor.
"""

from __future__ import annotations

import re

from test_launch_supervisor import RUNS_UNTIL_STOPPED, fails, launch, node

CAMERA_GONE = fails(4, "perception: error: camera /dev/video9 not found")


def test_a_node_waiting_for_its_restart_at_the_stop_is_in_the_summary():
    code, out = launch(node("cam", CAMERA_GONE, respawn=True, respawn_delay_s=3600.0),
                       node("rec", RUNS_UNTIL_STOPPED), stop_on=r"restarting in 3600 s")
    assert code == 0, out  # not failed for good: it would have been restarted
    assert re.search(r"\[launch\] summary: node 'cam' was down at the stop, waiting to restart \(due in \d+ s\); "
                     r"it last ended at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(exit code 4\): "
                     r"perception: error: camera /dev/video9 not found", out), out
    assert "summary: node 'rec'" not in out  # it ran until the stop


def test_a_node_waiting_again_after_restarts_says_how_often_it_was_restarted():
    code, out = launch(node("cam", CAMERA_GONE, respawn=True, respawn_delay_s=0.0),
                       stop_on=r"restarting in 0\.5 s")
    assert code == 0, out
    assert re.search(r"summary: node 'cam' was down at the stop, waiting to restart \(due in \d+ s\); it was "
                     r"restarted 1 time before; it last ended at .* \(exit code 4\): perception: error: camera", out), out


def test_gave_up_after_one_restart_is_singular():
    code, out = launch(node("cam", CAMERA_GONE, respawn=True, respawn_delay_s=0.0, respawn_max=1))
    assert code == 1, out
    assert "gave up after 1 restart in a row, none of which stayed up 10 s (respawn_max 1)" in out, out
