"""Shared fixtures and the skip rules for hardware- and data-dependent tests."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path

import pytest

CAMVID_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid"


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    has_cuda = None
    for item in items:
        if "gpu" in item.keywords or "tensorrt" in item.keywords:
            if has_cuda is None:
                has_cuda = _cuda_available()
            if not has_cuda:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU; none on this machine"))
        if "tensorrt" in item.keywords and importlib.util.find_spec("tensorrt") is None:
            item.add_marker(pytest.mark.skip(reason="needs the tensorrt package (pip install '.[gpu]')"))
        if "camvid" in item.keywords and not (CAMVID_DIR / "train.txt").is_file():
            item.add_marker(pytest.mark.skip(reason=f"CamVid not found at {CAMVID_DIR}"))


@pytest.fixture(autouse=True)
def _progress_not_quiet(monkeypatch):
    """Each test starts with progress on: ``cli.main(["-q", ...])`` run in-process turns it off for
    the whole interpreter (``progress.set_quiet``), which made the progress tests fail after it on
    the same xdist worker."""
    from perception import progress

    monkeypatch.setattr(progress, "_quiet", False)


@pytest.fixture(scope="session", autouse=True)
def _worker_caches(tmp_path_factory):
    """The engines' caches, which default to ~/.cache/perception, in this worker's temporary folder
    (the variables reach the nodes that tests start, too): a test neither reads what an earlier run,
    another worker or the user's own runs left there nor writes into the user's home. The ONNX
    Runtime and OpenVINO caches (keyed by the model's bytes, written atomically) are the worker's;
    the ``--engine auto`` verdict cache is each test's own (``_private_probe_cache``). A test that
    needs its own sets the variable again."""
    caches = tmp_path_factory.mktemp("engine-caches")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PERCEPTION_ORT_CACHE", str(caches / "ort"))
        mp.setenv("PERCEPTION_OPENVINO_CACHE", str(caches / "openvino"))
        mp.setenv("PERCEPTION_PROBE_CACHE", str(caches / "probe" / "session"))
        yield caches


_probe_caches = itertools.count()


@pytest.fixture(autouse=True)
def _private_probe_cache(_worker_caches, monkeypatch):
    """Each test its own ``--engine auto`` verdict cache, which decides what a node runs: a verdict
    one test probed or wrote is never another test's first start."""
    monkeypatch.setenv("PERCEPTION_PROBE_CACHE", str(_worker_caches / "probe" / str(next(_probe_caches))))


@pytest.fixture(autouse=True)
def _stop_signal_handlers_kept():
    """SIGINT/SIGTERM/SIGHUP as the test found them. ``cli.main(["run", ...])`` in process installs
    the start-up handlers before it parses its flags, and a refused command line (a flag given twice:
    argparse's exit) left them installed, with their stop watch on the wakeup fd: a later test that
    sends itself two signals then ended the whole worker ("a second stop signal ... exiting now")."""
    import signal

    stops = [s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None]
    before = {s: signal.getsignal(s) for s in stops}
    yield
    signals = sys.modules.get("perception.signals")
    if signals is not None and signals.STARTUP_SIGNALS.installed:
        signals.STARTUP_SIGNALS.uninstall()
    for sig, handler in before.items():
        if handler is not None and signal.getsignal(sig) != handler:
            signal.signal(sig, handler)


@pytest.fixture(autouse=True)
def _torch_threads_kept():
    """torch's thread count as the test found it: an in-process ``train``/``eval`` (``torch_threads``)
    or a test's ``torch.set_num_threads(1)`` otherwise sets it for every later test of the worker."""
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    yield
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@pytest.fixture
def camvid_dir() -> Path:
    return CAMVID_DIR


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    """The tiny brightness model (tests/tiny_models.py) at 48x64, written once per session."""
    from tiny_models import write_brightness_model

    return write_brightness_model(tmp_path_factory.mktemp("tiny_model") / "tiny.onnx", (48, 64))


@pytest.fixture(scope="session")
def folder_dataset(tmp_path_factory):
    """The blocks dataset (tests/blocks.py): a labelled folder of coloured rectangles, written once."""
    import blocks

    return blocks.write_dataset(tmp_path_factory.mktemp("blocks"))


@pytest.fixture(scope="session")
def trained_checkpoint(folder_dataset, tmp_path_factory):
    """``(path, Checkpoint)`` of a segnet_basic trained on ``folder_dataset`` (~10 s, once a session)."""
    pytest.importorskip("torch")
    import blocks

    root, table = folder_dataset
    return blocks.train_checkpoint(root, table, tmp_path_factory.mktemp("ckpt") / "best.pt")


@pytest.fixture
def tiny_engine(tiny_model_path):
    """An ONNX Runtime engine of ``tiny_model_path`` on one CPU thread."""
    from perception.engines import EngineOptions, load_engine

    eng = load_engine("ort", tiny_model_path, EngineOptions(provider="cpu", threads=1))
    yield eng
    eng.close()


@pytest.fixture
def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1, free now and from this xdist worker's own block
    (tests/loopback_ports.py: no other worker's test or ``bind(0)`` takes it meanwhile)."""
    from loopback_ports import free_tcp_port

    return free_tcp_port()


# Hypothesis profiles for the fuzz tests (tests/test_fuzz.py). "ci", the default, is what
# `make test` runs: derandomized (a fixed seed, the same cases every run) and small enough for a
# few seconds. "fuzz" is the long campaign (10,000 cases per test, random seed, printed on failure):
#     PERCEPTION_FUZZ=fuzz python -m pytest -q --timeout 0 tests/test_fuzz.py   (no per-test time limit)
# PERCEPTION_FUZZ_EXAMPLES overrides the case count of either profile.
def _register_fuzz_profiles() -> None:
    import os

    from hypothesis import HealthCheck, settings

    quiet = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
    settings.register_profile("ci", max_examples=100, derandomize=True, deadline=None, suppress_health_check=quiet,
                              database=None)
    settings.register_profile("fuzz", max_examples=10_000, deadline=None, suppress_health_check=quiet,
                              print_blob=True)
    profile = os.environ.get("PERCEPTION_FUZZ", "ci")
    examples = os.environ.get("PERCEPTION_FUZZ_EXAMPLES")
    if examples:
        settings.register_profile(f"{profile}-n", settings.get_profile(profile), max_examples=int(examples))
        profile = f"{profile}-n"
    settings.load_profile(profile)


_register_fuzz_profiles()


@pytest.fixture
def torch_offline_one_thread(monkeypatch):
    """Model tests: no weight downloads (PERCEPTION_NO_DOWNLOAD), one torch thread, seed 0."""
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("PERCEPTION_NO_DOWNLOAD", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def http_dir(tmp_path):
    """A folder served over HTTP on 127.0.0.1 by ``http.server`` in a thread: (folder, base URL)."""
    import functools
    import http.server
    import threading

    folder = tmp_path / "www"
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(10)


#: Root without the two capabilities that bypass file permissions (``permission_bound``).
NO_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]


@pytest.fixture(scope="session")
def permission_bound() -> list[str]:
    """The command prefix that runs a program bound by file permissions: nothing for a user who is
    not root; for root, root without ``CAP_DAC_OVERRIDE``/``CAP_DAC_READ_SEARCH`` (uid 0 stays, so
    the package imports from a CI clone under a private ``mktemp -d`` folder, which user nobody
    cannot enter; a test that closes a folder gives it to nobody, so root is not its owner). Skips
    with the reason when there is no way."""
    import os
    import shutil
    import subprocess
    import sys

    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root, which ignores file permissions, and there is no setpriv to drop that")
    probe = subprocess.run([*NO_DAC, sys.executable, "-c", "import perception.cli"], capture_output=True, text=True,
                           timeout=120, cwd="/")
    if probe.returncode != 0:
        pytest.skip(f"cannot run this Python without the capabilities that bypass file permissions: "
                    f"{probe.stderr.strip()[-200:]}")
    return NO_DAC
