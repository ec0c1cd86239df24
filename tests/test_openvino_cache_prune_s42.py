"""The OpenVINO cache keeps the most recently used compiled models, as the ONNX Runtime cache does
(s41 left it growing: OpenVINO never removes a blob, one per model, precision and thread count)."""

from __future__ import annotations

import importlib.util
import os
import time

import pytest

from perception.engines import load_engine
from perception.engines.base import EngineOptions
from tests.test_engine_cache_env_s38 import models

pytestmark = pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="needs openvino")
OPTIONS = EngineOptions(precision="fp32", threads=1)


def _blobs(cache):
    return {p.name: p.stat().st_mtime for p in cache.glob("*.blob")}


def test_the_openvino_cache_keeps_the_most_recently_used_blobs(tmp_path, monkeypatch):
    from perception.engines import openvino as ov_mod

    cache = tmp_path / "cache"
    monkeypatch.setenv("PERCEPTION_OPENVINO_CACHE", str(cache))
    monkeypatch.setattr(ov_mod, "OV_CACHE_MAX_ENTRIES", 2)
    a, b, c = models(tmp_path, 3)
    load_engine("openvino", a, OPTIONS)
    blob_a = set(_blobs(cache))
    load_engine("openvino", b, OPTIONS)
    blob_b = set(_blobs(cache)) - blob_a
    assert len(blob_a) == len(blob_b) == 1
    for name, age in ((*blob_a, 100), (*blob_b, 50)):
        os.utime(cache / name, (time.time() - age, time.time() - age))
    load_engine("openvino", a, OPTIONS)  # a hit (OpenVINO maps the blob): a is now the most recently used
    load_engine("openvino", c, OPTIONS)
    left = set(_blobs(cache))
    assert blob_a <= left and not blob_b & left and len(left) == 2, (blob_a, blob_b, left)


def test_the_blob_in_use_stays_whatever_the_limit(tmp_path, monkeypatch):
    from perception.engines import openvino as ov_mod

    cache = tmp_path / "cache"
    monkeypatch.setenv("PERCEPTION_OPENVINO_CACHE", str(cache))
    (model,) = models(tmp_path, 1)
    load_engine("openvino", model, OPTIONS)
    (used,) = _blobs(cache)
    os.utime(cache / used, (time.time() - 1000, time.time() - 1000))
    for i in range(3):  # newer blobs of other models, written before this start
        (cache / f"{i}.blob").write_bytes(b"x" * 10)
        os.utime(cache / f"{i}.blob", (time.time() - 10, time.time() - 10))
    (cache / "keep.txt").write_text("not a blob")
    monkeypatch.setattr(ov_mod, "OV_CACHE_MAX_ENTRIES", 1)
    load_engine("openvino", model, OPTIONS)
    assert set(_blobs(cache)) == {used} and (cache / "keep.txt").exists()


@pytest.mark.parametrize("how", ["relative", "symlink", "dotdot"])
def test_the_blob_in_use_is_told_however_the_cache_folder_is_named(tmp_path, monkeypatch, how):
    """H51 M3 of s42: a relative, linked or '..' cache path did not match /proc/self/maps' real
    path, so the blob just used was removed and the least recently used one kept."""
    from perception.engines import openvino as ov_mod

    real = tmp_path / "real" / "cache"
    real.mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    monkeypatch.chdir(tmp_path)
    given = {"relative": "real/cache", "symlink": str(tmp_path / "link" / "cache"),
             "dotdot": str(tmp_path / "real" / ".." / "real" / "cache")}[how]
    monkeypatch.setenv("PERCEPTION_OPENVINO_CACHE", given)
    (model,) = models(tmp_path, 1)
    load_engine("openvino", model, OPTIONS)
    (used,) = _blobs(real)
    os.utime(real / used, (time.time() - 1000, time.time() - 1000))
    (real / "123.blob").write_bytes(b"x")  # another model's, newer
    os.utime(real / "123.blob", (time.time() - 10, time.time() - 10))
    monkeypatch.setattr(ov_mod, "OV_CACHE_MAX_ENTRIES", 1)
    load_engine("openvino", model, OPTIONS)  # a hit on the old blob
    assert set(_blobs(real)) == {used}


def test_files_openvino_did_not_name_are_never_pruned(tmp_path, monkeypatch):
    from perception.engines import openvino as ov_mod

    cache = tmp_path / "cache"
    monkeypatch.setenv("PERCEPTION_OPENVINO_CACHE", str(cache))
    (model,) = models(tmp_path, 1)
    load_engine("openvino", model, OPTIONS)
    for name in ("myriad_model.blob", "old.tmp.blob"):
        (cache / name).write_bytes(b"x")
        os.utime(cache / name, (time.time() - 7200, time.time() - 7200))
    monkeypatch.setattr(ov_mod, "OV_CACHE_MAX_ENTRIES", 1)
    load_engine("openvino", model, OPTIONS)
    assert (cache / "myriad_model.blob").exists() and (cache / "old.tmp.blob").exists()
