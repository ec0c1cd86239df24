"""`perception bench` as a deployer reads it (H14, s37): a full disk while the report is written, a
read-only --out found before measuring, the spread between an engine configuration's blocks and a
busy machine said in the report, Ctrl-C keeping the blocks every configuration finished, and
`bench report` refusing hand-edited figures in one line naming the key."""

from __future__ import annotations

import copy
import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from perception.bench.report import summary_text
from perception.bench.results import RESULTS_FILE, RESULTS_SCHEMA, load_results
from perception.bench.stats import summarize_ms
from perception.cli import main as cli_main

ENGINE = ["bench", "engine", "--threads", "1,2", "--runs", "12", "--warmup", "1", "--blocks", "3", "--no-progress",
          "-q"]


def _one_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("perception: error: "), err
    assert "Traceback" not in err
    return lines[0].removeprefix("perception: error: ")


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> Path:
    """A real engine bench JSON (two configurations, three blocks), made once."""
    from tiny_models import write_brightness_model

    root = tmp_path_factory.mktemp("measured")
    model = write_brightness_model(root / "tiny.onnx", (48, 64))
    assert cli_main([*ENGINE, "--model", str(model), "--out", str(root / "out")]) == 0
    return root / "out" / RESULTS_FILE


# ---- a full disk while the report is written --------------------------------------------------------


def _disk_full_on(monkeypatch, name: str) -> None:
    """Writing the file ``name`` fails as on a full disk: some bytes land, then ENOSPC naming no file
    (as PIL's and Python's writes raise it)."""
    import matplotlib.figure

    if name.endswith(".png"):
        real = matplotlib.figure.Figure.savefig

        def savefig(self, path, *args, **kwargs):
            if Path(path).name == name:
                Path(path).write_bytes(b"\x89PNG partial")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(self, path, *args, **kwargs)

        monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
        return
    real_write = Path.write_text

    def write_text(self, text, *args, **kwargs):
        if self.name == name:
            real_write(self, text[:10], *args, **kwargs)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)


def test_a_full_disk_at_a_plot_is_one_line_naming_it_and_the_json_is_kept(tmp_path, tiny_model_path, monkeypatch,
                                                                          capsys):
    out = tmp_path / "b"
    _disk_full_on(monkeypatch, "engine_fps.png")
    assert cli_main([*ENGINE, "--model", str(tiny_model_path), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert _one_error(captured.err) == (
        f"cannot write {out / 'engine_fps.png'} (No space left on device); kept {out / RESULTS_FILE}, every figure of "
        f"this run: once there is room, 'perception bench report {out}' makes the report and plots")
    assert "#1 tiny" in captured.out and "#2 tiny" in captured.out  # the figures are on the terminal too
    assert not (out / "engine_fps.png").exists()  # no truncated plot left to be taken for a whole one
    assert len(load_results(out)["engine"]["results"]) == 2
    monkeypatch.undo()
    assert cli_main(["bench", "report", str(out)]) == 0  # as the line says, once there is room
    assert (out / "engine_fps.png").read_bytes()[:4] == b"\x89PNG" and (out / "perception.bench.md").is_file()


def test_a_full_disk_at_the_json_says_nothing_was_kept_but_the_summary(tmp_path, tiny_model_path, monkeypatch,
                                                                       capsys):
    out = tmp_path / "b"
    _disk_full_on(monkeypatch, RESULTS_FILE)
    assert cli_main([*ENGINE, "--model", str(tiny_model_path), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert _one_error(captured.err).startswith(
        f"cannot write {out / RESULTS_FILE} (No space left on device); nothing of this run was kept but the summary "
        "above")
    assert "#1 tiny" in captured.out
    assert not (out / RESULTS_FILE).exists()  # not a truncated JSON


def test_bench_report_on_a_full_disk_is_one_line_and_keeps_its_json(measured, tmp_path, monkeypatch, capsys):
    out = tmp_path / "r"
    _disk_full_on(monkeypatch, "perception.bench.md")
    assert cli_main(["bench", "report", str(measured), "--out", str(out)]) == 2
    assert _one_error(capsys.readouterr().err).startswith(
        f"cannot write {out / 'perception.bench.md'} (No space left on device); {measured} is unchanged")
    assert not (out / "perception.bench.md").exists()


def test_a_read_only_out_is_refused_before_anything_is_measured(tiny_model_path, permission_bound):
    root = Path(tempfile.mkdtemp(prefix="perception-f9-"))  # /tmp: pytest's folders are closed to others
    try:
        root.chmod(0o755)
        shutil.copy(tiny_model_path, root / "tiny.onnx")
        (root / "ro").mkdir()
        (root / "ro").chmod(0o555)
        if os.geteuid() == 0:
            os.chown(root / "ro", 65534, 65534)  # root without its capabilities is then another user
        for mode in ("engine", "pipeline"):
            done = subprocess.run([*permission_bound, sys.executable, "-m", "perception", "bench", mode, "--model",
                                   "tiny.onnx", "--out", "ro"], capture_output=True, text=True, timeout=120, cwd=root)
            # progress is on: a bench that measured first would have said so on stderr
            assert done.returncode == 2, done.stderr
            assert _one_error(done.stderr) == ("cannot write in --out folder ro (Permission denied); choose a "
                                               "writable folder"), mode
    finally:
        (root / "ro").chmod(0o755)
        shutil.rmtree(root)


# ---- the spread between blocks, and a busy machine ----------------------------------------------------


def test_engine_rows_carry_their_blocks_and_the_load_around_them(measured, capsys):
    doc = load_results(measured)
    for row in doc["engine"]["results"]:
        assert sum(row["block_runs"]) == row["timed_runs"] == 12 and len(row["block_runs"]) == 3
        assert len(row["block_p50_ms"]) == 3 and len(row["block_load_1m"]) == 3
        assert all(len(pair) == 2 for pair in row["block_load_1m"])
        assert row["block_p50_spread"] == pytest.approx(max(row["block_p50_ms"]) / min(row["block_p50_ms"]),
                                                        rel=1e-2)
    md = measured.with_name("perception.bench.md").read_text()
    assert "| block p50 ms |" in md and "load average (1 min) during the engine blocks, min..max" in md
    assert "blocks p50 " in summary_text(doc)


def _row(samples: list[float], blocks: list[int], **changes) -> dict:
    """An engine row as the bench writes it for ``samples`` timed in ``blocks``, one call at a time."""
    import numpy as np

    lat = summarize_ms(samples)
    starts = np.cumsum([0, *blocks])
    medians = [float(np.median(samples[a:b])) for a, b in zip(starts, starts[1:], strict=False)]
    fps = 1000 / lat["mean"]
    return {"label": "m ort t2 b1", "model_name": "m", "engine": "ort", "provider": "cpu", "precision": "fp32",
            "agreement": 1.0, "input_hw": [48, 64], "batch": 1, "timed_runs": len(samples),
            "timed_s": round(sum(samples) / 1000, 6), "latency_ms": lat, "fps": fps, "throughput_ips": fps,
            "model_file_mb": 0.001, "samples_ms": samples, "memory": {"rss_peak_mb": 100.0},
            "ratio_to_first": {"fps": 1.0, "throughput_ips": 1.0, "p50_ms": 1.0, "p99_ms": 1.0},
            "block_runs": blocks, "block_p50_ms": medians, "block_p50_spread": round(max(medians) / min(medians), 3),
            "block_load_1m": [[0.5, 0.6] for _ in blocks], **changes}


def _write(tmp_path: Path, doc: dict) -> Path:
    folder = tmp_path / "hand"
    folder.mkdir(exist_ok=True)
    (folder / RESULTS_FILE).write_text(json.dumps(doc))
    return folder


def _engine_doc(row: dict, load: float = 0.5) -> dict:
    return {"schema": RESULTS_SCHEMA, "kind": "engine", "created_utc": "x", "command": "perception bench engine",
            "environment": {"cpu_logical_cores": 2, "load_average_1m": load}, "engine": {"results": [row]}}


def test_blocks_that_disagree_are_shown_and_warned_of_in_the_report_and_on_the_terminal(tmp_path, capsys):
    doc = _engine_doc(_row([30.0] * 4 + [75.0] * 4, [4, 4]))
    folder = _write(tmp_path, doc)
    assert cli_main(["bench", "report", str(folder)]) == 0
    md = (folder / "perception.bench.md").read_text()
    assert "| 30.00..75.00 (x2.50) |" in md
    assert ("**Warning:** #1 m ort t2 b1: its 2 blocks' medians range 30.00..75.00 ms (x2.50): the machine's speed "
            "changed during the run, so its figures are not trustworthy") in md  # one row: no other rows
    terminal = summary_text(load_results(folder))
    assert "blocks p50 30.00..75.00 (x2.50) ms" in terminal and "warning: #1 m ort t2 b1: its 2 blocks'" in terminal


def test_a_machine_busier_than_its_cores_is_warned_of(tmp_path):
    row = _row([30.0] * 8, [4, 4], block_load_1m=[[1.0, 6.31], [6.31, 5.0]])
    folder = _write(tmp_path, _engine_doc(row))
    assert cli_main(["bench", "report", str(folder)]) == 0
    md = (folder / "perception.bench.md").read_text()
    assert ("**Warning:** the machine was busy: its load average (1 min) reached 6.31 on 2 cores (from 0.50; this "
            "bench's own threads count in it): other work took turns with the timed calls, so its figures are not "
            "trustworthy") in md  # one row: no ratios between rows
    # 12 timed calls: fewer than 10 would be warned of as too few (s40)
    steady = _write(tmp_path, _engine_doc(_row([30.0, 31.0, 30.5, 30.0, 31.0, 30.2] * 2, [6, 6])))
    assert cli_main(["bench", "report", str(steady)]) == 0
    assert "Warning" not in (steady / "perception.bench.md").read_text()


# ---- Ctrl-C in the engine bench keeps the blocks every configuration finished ---------------------------


def _interrupt_at(monkeypatch, call: int) -> None:
    """The ``call``-th timed block (1-based, over every configuration) is stopped by Ctrl-C."""
    import perception.bench.engine as engine

    real, calls = engine.time_block, []

    def time_block(case, runs, seconds, tick):
        calls.append(case)
        if len(calls) == call:
            real(case, 1, None, tick)  # a block cut short: dropped, not reported
            raise KeyboardInterrupt
        return real(case, runs, seconds, tick)

    monkeypatch.setattr(engine, "time_block", time_block)


def test_ctrl_c_keeps_the_blocks_every_configuration_finished_marked_partial(tmp_path, tiny_model_path, monkeypatch,
                                                                             capsys):
    out = tmp_path / "b"
    _interrupt_at(monkeypatch, 4)  # block 2 of configuration 2: block 1 of both is whole
    assert cli_main([*ENGINE, "--model", str(tiny_model_path), "--out", str(out)]) == 130
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        f"perception: interrupted; wrote the first 1 of 3 blocks of every configuration to {out / RESULTS_FILE} "
        "(marked partial)"]
    assert captured.out.startswith("partial: interrupted after block 1 of 3; every configuration's figures are from "
                                   "its first block\n")
    monkeypatch.undo()
    doc = load_results(out)  # a whole bench JSON: `bench report` takes it
    assert doc["engine"]["interrupted"] == {"blocks_done": 1, "blocks": 3}
    assert [r["timed_runs"] for r in doc["engine"]["results"]] == [4, 4]  # 12 runs in 3 blocks: the first 4
    assert [r["block_runs"] for r in doc["engine"]["results"]] == [[4], [4]]
    assert "**Partial: interrupted after block 1 of 3" in (out / "perception.bench.md").read_text()
    assert cli_main(["bench", "report", str(out)]) == 0


def test_ctrl_c_before_every_configuration_finished_a_block_keeps_nothing(tmp_path, tiny_model_path, monkeypatch,
                                                                          capsys):
    out = tmp_path / "b"
    _interrupt_at(monkeypatch, 2)  # block 1 of configuration 2
    assert cli_main([*ENGINE, "--model", str(tiny_model_path), "--out", str(out)]) == 130
    assert capsys.readouterr().err.strip().splitlines() == ["perception: interrupted"]
    assert not out.exists()


# ---- bench report refuses figures the bench never writes ------------------------------------------------


def _lat(r):
    return r["latency_ms"]


HOSTILE_ENGINE = {
    "p50 above p99": (lambda d, r: _lat(r).update(p50=500.0), "engine.results[0].latency_ms.p50 is 500.0, above its p90"),
    "percentiles not the samples'": (lambda d, r: _lat(r).update(p50=0.001, p90=0.002, p99=0.003, min=0.0),
                                     "engine.results[0].latency_ms.min is 0.0, but its samples_ms give"),
    "fps not the mean's": (lambda d, r: r.update(fps=r["fps"] * 3, throughput_ips=r["fps"] * 3),
                           "engine.results[0].fps is"),
    "img/s not fps x batch": (lambda d, r: r.update(throughput_ips=r["fps"] * 2),
                              "engine.results[0].throughput_ips is"),
    "negative load time": (lambda d, r: r.update(load_s=-3.0),
                           "engine.results[0].load_s is -3.0, expected a number not below 0"),
    "negative RSS": (lambda d, r: r["memory"].update(rss_peak_mb=-100.0),
                     "engine.results[0].memory.rss_peak_mb is -100.0, expected a number not below 0"),
    "batch 0": (lambda d, r: r.update(batch=0), "engine.results[0].batch is 0, expected a whole number from 1"),
    "timed_s 0": (lambda d, r: r.update(timed_s=0), "engine.results[0].timed_s is 0, but fps is"),
    "300 digits": (lambda d, r: _lat(r).update(max=1e300),
                   "engine.results[0].latency_ms.max is 1e+300, more than any bench measures"),
    "infinity where the report does not look": (lambda d, r: d["engine"].update(extra=float("inf")),
                                                "engine.extra is Infinity, expected a number"),
    "no results": (lambda d, r: d["engine"].pop("results"), "engine.results is missing"),
    "no rows": (lambda d, r: d["engine"].update(results=[]), "engine.results is empty: no configuration to report"),
    "an unknown kind": (lambda d, r: d.update(kind="zzz"), 'kind is "zzz", expected one of "engine", "pipeline"'),
    "block medians not the samples'": (lambda d, r: r.update(block_p50_ms=[1.0, 2.0, 3.0]),
                                       "engine.results[0].block_p50_ms is not the medians of its blocks"),
    "blocks not the runs": (lambda d, r: r.update(block_runs=[4, 4, 5]),
                            "engine.results[0].block_runs adds up to 13, but the row holds 12 samples_ms"),
}


@pytest.mark.parametrize("case", list(HOSTILE_ENGINE))
def test_bench_report_refuses_a_hand_edited_engine_figure_naming_it(case, measured, tmp_path, capsys):
    damage, said = HOSTILE_ENGINE[case]
    doc = json.loads(measured.read_text())
    damage(doc, doc["engine"]["results"][0])
    folder = _write(tmp_path, doc)
    assert cli_main(["bench", "report", str(folder)]) == 2
    line = _one_error(capsys.readouterr().err)
    assert line.startswith(f"{folder / RESULTS_FILE}: {said}") and "so no report can be made from it" in line, line
    assert not (folder / "perception.bench.md").exists()


def _pipeline_doc() -> dict:
    stage = {"count": 2, "mean": 1.5, "min": 1.0, "p50": 1.5, "p90": 1.9, "p99": 1.99, "max": 2.0}
    return {"schema": RESULTS_SCHEMA, "kind": "pipeline", "environment": {},
            "pipeline": {"window_s": 5.0, "duration_s": 5.0, "input_fps": 2.0, "output_fps": 2.0,
                         "frames_captured": 10, "frames_received": 10,
                         "sequence": {"received": 10, "first": 1, "last": 10, "missing": 0, "gaps": 0, "max_gap": 0},
                         "stages_ms": {"infer": dict(stage)}, "capture_to_receive_ms": dict(stage),
                         "capture_to_receive_samples_ms": [1.0, 2.0]}}


HOSTILE_PIPELINE = {
    "no stage table": (lambda p: p.pop("stages_ms"), "pipeline.stages_ms is missing"),
    "negative window": (lambda p: p.update(window_s=-5.0), "pipeline.window_s is -5.0, expected a number not below 0"),
    "negative missing count": (lambda p: p["sequence"].update(missing=-9),
                               "pipeline.sequence.missing is -9, expected a whole number not below 0"),
    "stage p50 above its p99": (lambda p: p["stages_ms"]["infer"].update(p50=9.0),
                                "pipeline.stages_ms.infer.p50 is 9.0, above its p90"),
    "end to end not its samples'": (lambda p: p["capture_to_receive_ms"].update(p90=1.2, p99=1.3, p50=1.1),
                                    "pipeline.capture_to_receive_ms.p50 is 1.1, but its capture_to_receive_samples_ms"),
    # s38: output_fps was not checked against the frames received in the window
    "output rate not its frames'": (lambda p: p.update(output_fps=20.0),
                                    "pipeline.output_fps is 20.0, but its 10 frames received in window_s 5.0 give 2"),
    "input rate not its frames'": (lambda p: p.update(frames_captured=40),
                                   "pipeline.input_fps is 2.0, but its 40 frames captured in window_s 5.0 give 8"),
}


@pytest.mark.parametrize("case", list(HOSTILE_PIPELINE))
def test_bench_report_refuses_a_hand_edited_pipeline_figure_naming_it(case, tmp_path, capsys):
    damage, said = HOSTILE_PIPELINE[case]
    doc = _pipeline_doc()
    folder = _write(tmp_path, copy.deepcopy(doc))
    assert cli_main(["bench", "report", str(folder)]) == 0  # whole, it is reported
    capsys.readouterr()
    damage(doc["pipeline"])
    folder = _write(tmp_path, doc)
    assert cli_main(["bench", "report", str(folder)]) == 2
    assert _one_error(capsys.readouterr().err).startswith(f"{folder / RESULTS_FILE}: {said}")


def test_a_json_nested_thousands_deep_is_one_line(tmp_path, capsys):
    (tmp_path / RESULTS_FILE).write_text("[" * 100000 + "]" * 100000)
    assert cli_main(["bench", "report", str(tmp_path)]) == 2
    assert _one_error(capsys.readouterr().err) == (
        f"{tmp_path / RESULTS_FILE} nests lists or objects thousands deep, which no bench result does; pass the "
        "perception.bench.json that bench wrote")


def test_a_model_name_with_a_bar_and_a_line_break_stays_in_its_cell(measured, tmp_path):
    doc = json.loads(measured.read_text())
    doc["engine"]["results"][0]["model_name"] = "x|y\n# pwn"
    folder = _write(tmp_path, doc)
    assert cli_main(["bench", "report", str(folder)]) == 0
    md = (folder / "perception.bench.md").read_text()
    assert "| x\\|y # pwn |" in md
    assert not any(line.startswith("# pwn") for line in md.splitlines())
    row = next(line for line in md.splitlines() if "x\\|y" in line)
    header = next(line for line in md.splitlines() if line.startswith("| # | model |"))
    assert row.replace("\\|", "").count("|") == header.count("|")  # as many cells as the header


def test_a_folder_an_earlier_release_wrote_is_read_and_few_samples_name_the_commands_own_flags(tmp_path):
    """H43 F5: an earlier release wrote bench.json, and `bench report DIR` said 'not found'; F7:
    the few-samples warning named --engine-runs, which bench engine does not have."""
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "bench.json").write_text(json.dumps(_engine_doc(_row([30.0] * 4, [4]))))
    assert load_results(folder)["kind"] == "engine"
    assert cli_main(["bench", "report", str(folder)]) == 0
    md = (folder / "perception.bench.md").read_text()
    assert "only 4 timed calls measured" in md and "measure longer (--duration, --runs)" in md, md
    assert cli_main(["bench", "report", str(folder), "--out", str(tmp_path / "new")]) == 0  # V2: into --out too
    assert json.loads((tmp_path / "new" / RESULTS_FILE).read_text())["kind"] == "engine"
