"""Session 33, verifier V1's new problems (fixer F9).

1. ``perception launch FILE --check`` accepted a malformed ``endpoint`` (``tcp://127.0.0.1:/x``)
   that the node itself then refused once started.
2. The C client took ``--max-queue-mb 1e3`` (strtod) where ``listen`` takes whole decimal numbers only.
3. ``replay DIR`` on a folder this user may not list said the folder "holds no .mcap file".
4. A node whose source never gave a frame ended with ``startup: "complete"``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from test_clients import _c_client, _js_client

from perception.cli import main as cli_main
from perception.engines.base import Engine
from perception.pipeline import Pipeline
from perception.publish import MaskPublisher
from perception.run_config import RunConfig
from perception.sources.base import Source
from perception.stats_schema import NO_FRAME_YET

BAD_ENDPOINT = "tcp://127.0.0.1:/x"


# ---- 1: launch --check refuses a malformed endpoint, with the node's own words -----------------------------


@pytest.mark.parametrize(("kind", "parameters"), [
    ("listen", {"namespace": "a/b"}),
    ("record", {"namespace": "a/b", "out": "rec.mcap"}),
    ("replay", {"file": "rec.mcap"}),
    ("pipeline", {"source": "synthetic"}),
])
@pytest.mark.parametrize("endpoint", [BAD_ENDPOINT, "tcp://127.0.0.1:70000", "inproc://x"])
def test_launch_check_refuses_a_malformed_endpoint(tmp_path, capsys, kind, parameters, endpoint):
    launch = tmp_path / "ep.yaml"
    launch.write_text(yaml.safe_dump({"launch": [{"node": {"name": "r", "kind": kind,
                                                           "parameters": {"endpoint": endpoint, **parameters}}}]}))
    for extra in (["--check"], []):  # the plain launch refuses it before starting anything too
        code = cli_main(["launch", str(launch), *extra])
        err = capsys.readouterr().err
        assert code == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "node 'r': parameters: endpoint:" in lines[0] and repr(endpoint) in lines[0], err
        assert "Traceback" not in err


def test_launch_check_takes_a_well_formed_endpoint(tmp_path, capsys):
    launch = tmp_path / "ok.yaml"
    launch.write_text(yaml.safe_dump({"launch": [{"node": {"name": "l", "kind": "listen", "parameters": {
        "endpoint": "tcp://[::1]:5599", "namespace": "a/b"}}}]}))
    assert cli_main(["launch", str(launch), "--check"]) == 0
    assert "perception listen --endpoint 'tcp://[::1]:5599'" in capsys.readouterr().out


# ---- 2: the reference clients take whole-number flags in decimal digits only ----------------------------


@pytest.mark.parametrize("name", ["c", "js"])
def test_clients_refuse_whole_number_flags_not_in_decimal_digits(name):
    cmd, reason = (_c_client if name == "c" else _js_client)()
    if cmd is None:
        pytest.skip(f"the {name} subscriber cannot run here: {reason}")
    for flag, value in [("--max-queue-mb", "1e3"), ("--max-queue-mb", "0x10"), ("--max-queue-mb", "10.0"),
                        ("--max-queue-mb", " 5"), ("--count", "1e3"), ("--max-mask-pixels", "1e6")]:
        done = subprocess.run([*cmd, flag, value], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, (flag, value, done.stderr)
        assert f"{flag} takes a whole number" in done.stderr and f"got '{value}'" in done.stderr
    # The same value in digits runs (nothing listens there: it ends after --duration, with status 4).
    done = subprocess.run([*cmd, "--endpoint", "tcp://127.0.0.1:9", "--max-queue-mb", "1000", "--duration", "0.1"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 4 and "no messages received" in done.stderr, done.stderr


# ---- 3: replay of a folder this user may not list ---------------------------------------------------------


@pytest.mark.parametrize("mode", [0o700, 0o711])  # neither listable nor enterable / enterable only
def test_replay_of_a_folder_that_cannot_be_listed_says_permission_denied(mode, permission_bound):
    prefix = permission_bound
    root = Path(tempfile.mkdtemp(prefix="perception-f9-"))  # /tmp: pytest's folders are closed to others
    try:
        root.chmod(0o755)
        hidden = root / "hid"
        hidden.mkdir()
        (hidden / "run.mcap").write_bytes(b"")
        hidden.chmod(mode)
        if os.geteuid() == 0:
            os.chown(hidden, 65534, 65534)  # root without its capabilities is then another user
        done = subprocess.run([*prefix, sys.executable, "-m", "perception", "replay", "hid",
                               "--endpoint", "tcp://127.0.0.1:*"], capture_output=True, text=True, timeout=120, cwd=root)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines() == [
            "perception: error: recording folder hid cannot be read: permission denied; check its permissions "
            "(ls -ld hid) or run as a user who can read it"], done.stderr
    finally:
        (root / "hid").chmod(0o755)
        shutil.rmtree(root)


# ---- 4: startup is not "complete" when no frame ever came -------------------------------------------------


class _NoFrames(Source):
    """A source that ends before its first frame (a stream that sent nothing decodable)."""

    kind = "test"
    live = True

    def _next_image(self):
        return None


def test_a_node_whose_source_gave_no_frame_does_not_report_startup_complete(tiny_engine: Engine):
    config = RunConfig.from_settings(source="synthetic", width=64, height=48, warmup=0)
    publisher = MaskPublisher(endpoint="tcp://127.0.0.1:*", namespace="perception/f9")
    try:
        final = Pipeline(config, source=_NoFrames("test", config.source_options), engine=tiny_engine,
                         publisher=publisher).run()
    finally:
        publisher.close()
    assert final["frames_in"] == 0 and final["published"] == 0
    assert final["startup"] == NO_FRAME_YET == "waiting for the first frame", json.dumps(final)
