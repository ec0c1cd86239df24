"""``cli.main(["run", ...])`` refused before the node starts gives the stop signals back.

Hunt s37 H10: the start-up handlers go in before the command line is parsed; a line argparse
refused (a flag given twice, ``--help``) left them installed, with their stop watch, so a program
that called ``main()`` and went on had its SIGINT/SIGTERM caught by a node that never ran (a test
worker was ended by a "second stop signal" that way).
"""

from __future__ import annotations

import signal

import pytest

from perception.cli import main
from perception.signals import STARTUP_SIGNALS


@pytest.mark.parametrize("argv", [
    ["run", "--model", "a.onnx", "--model", "b.onnx"],  # a flag given twice: argparse's exit 2
    ["run", "--help"],  # argparse's exit 0
    ["-q", "-v", "run"],  # refused after parsing
], ids=["repeated-flag", "help", "q-and-v"])
def test_a_refused_run_command_line_leaves_the_stop_signals_as_they_were(argv, capsys):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(SystemExit):
        main(argv)
    assert not STARTUP_SIGNALS.installed
    assert {s: signal.getsignal(s) for s in before} == before
