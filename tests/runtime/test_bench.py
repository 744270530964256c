"""`lmforge bench`: every backend and both baselines measured on a tiny model, the JSON document's
exact keys, a corrupt file reported beside the others, and the CLI end to end."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lmforge.errors import LmforgeError
from lmforge.registry import Registry
from lmforge.runtime import BACKENDS
from lmforge.runtime.bench import bench_model
from lmforge.runtime.bench_report import BenchReport, flops_per_sequence
from lmforge.settings import Settings

SMALL: dict[str, Any] = {"lengths": (16,), "latency_runs": 3, "min_seconds": 0.05}

TOP_KEYS = {
    "model",
    "path",
    "machine",
    "settings",
    "texts",
    "gflop_per_sequence",
    "baseline_model",
    "baseline_gflop_per_sequence",
    "results",
}
MACHINE_KEYS = {
    "cpu",
    "isa",
    "native_bf16",
    "int8_dot",
    "threads",
    "torch",
    "transformers",
    "onnxruntime",
    "peaks",
}
PEAK_KEYS = {"fp32_gflops", "int8_gops", "matrix_size"}
SETTINGS_KEYS = {"lengths", "batch_size", "latency_runs", "min_seconds", "baselines", "rounds"}
RESULT_KEYS = {
    "backend",
    "kind",
    "peak",
    "size_mb",
    "latency",
    "latency_speedup_vs_torch_eager",
    "throughput",
    "error",
}
LATENCY_KEYS = {"p50_ms", "p99_ms", "runs"}
THROUGHPUT_KEYS = {
    "sequences_per_second",
    "batches",
    "gops",
    "share_of_peak",
    "speedup_vs_torch_eager",
    "batch1_sequences_per_second",
    "row_cost_vs_batch1",
}
BASELINES = ["torch-eager", "transformers-pipeline"]


@pytest.fixture(scope="module")
def report(tiny_model_dir: Path) -> BenchReport:
    return bench_model(tiny_model_dir, batch_size=4, **SMALL)


def test_every_backend_and_both_baselines_report_positive_numbers(report: BenchReport) -> None:
    assert [r.backend for r in report.results] == [*BACKENDS, *BASELINES]
    assert [r.kind for r in report.results] == ["backend"] * len(BACKENDS) + ["baseline"] * 2
    for r in report.results:
        assert r.error is None, (r.backend, r.error)
        assert r.latency is not None and r.latency.runs == 3
        assert 0 < r.latency.p50_ms <= r.latency.p99_ms
        assert r.size_mb is not None and r.size_mb > 0
        run = r.throughput[16]
        assert run.sequences_per_second > 0 and run.batch_size == 4 and run.batches >= 3
        single = r.single[16]
        assert single.sequences_per_second > 0 and single.batch_size == 1
        assert report.row_cost_vs_batch1(r, 16) == pytest.approx(
            single.sequences_per_second / run.sequences_per_second
        )
        assert (report.gops(r, 16) or 0) > 0 and (report.share_of_peak(r, 16) or 0) > 0
        assert report.speedup(r, 16) is not None and report.latency_speedup(r) is not None
    eager = report.result("torch-eager")
    assert eager is not None and report.speedup(eager, 16) == 1.0
    assert report.machine.peaks.fp32_gflops > 0 and report.machine.peaks.int8_gops > 0
    assert {r.backend: r.peak for r in report.results}["onnx-int8"] == "int8"
    assert report.texts_source == "builtin rotten_tomatoes" and report.texts_count > 100


def test_the_json_document_has_exactly_the_documented_keys(report: BenchReport) -> None:
    doc = json.loads(json.dumps(report.to_json()))
    assert set(doc) == TOP_KEYS
    assert set(doc["machine"]) == MACHINE_KEYS and set(doc["machine"]["peaks"]) == PEAK_KEYS
    assert doc["machine"]["peaks"]["fp32_gflops"] > 0 and doc["machine"]["peaks"]["int8_gops"] > 0
    assert doc["machine"]["threads"] >= 1
    assert set(doc["settings"]) == SETTINGS_KEYS and doc["settings"]["lengths"] == [16]
    assert set(doc["texts"]) == {"source", "count"}
    assert set(doc["gflop_per_sequence"]) == {"16"} and doc["gflop_per_sequence"]["16"] > 0
    for r in doc["results"]:
        assert set(r) == RESULT_KEYS
        assert set(r["latency"]) == LATENCY_KEYS
        assert set(r["throughput"]) == {"16"}
        assert set(r["throughput"]["16"]) == THROUGHPUT_KEYS
        assert r["throughput"]["16"]["share_of_peak"] > 0
    eager = next(r for r in doc["results"] if r["backend"] == "torch-eager")
    assert eager["latency_speedup_vs_torch_eager"] == 1.0
    assert eager["throughput"]["16"]["speedup_vs_torch_eager"] == 1.0


def test_flops_follow_the_documented_formula() -> None:
    bert = {
        "num_hidden_layers": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_attention_heads": 2,
    }
    length = 16
    per_layer = (
        2 * length * 32 * 3 * 32  # Q, K, V
        + 2 * 2 * length * length * 32  # scores and weighted sum
        + 2 * length * 32 * 32  # output projection
        + 2 * 2 * length * 32 * 64  # feed-forward
    )
    assert flops_per_sequence(bert, length) == 2 * per_layer
    distil = {"n_layers": 2, "dim": 32, "hidden_dim": 64, "n_heads": 2}
    assert flops_per_sequence(distil, length) == 2 * per_layer
    assert flops_per_sequence({"model_type": "mystery"}, length) is None


def test_a_corrupt_onnx_file_is_reported_while_the_others_still_run(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.int8.onnx").write_bytes(b"not an onnx model at all")
    report = bench_model(folder, backends=["onnx-fp32", "onnx-int8"], baselines=False, **SMALL)
    fine, broken = report.results
    assert fine.error is None and fine.throughput[16].sequences_per_second > 0
    assert broken.error is not None and "model.int8.onnx" in broken.error
    entry = report.to_json()["results"][1]
    assert entry["backend"] == "onnx-int8" and entry["error"] == broken.error
    assert entry["latency"] is None and entry["throughput"] == {}
    assert entry["latency_speedup_vs_torch_eager"] is None


def test_unknown_unavailable_backends_and_bad_lengths_are_clear_errors(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(LmforgeError, match=r"unknown backend 'onnx-fp16'.*choose one of"):
        bench_model(tiny_model_dir, backends=["onnx-fp16"])
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.int8.onnx").unlink()
    with pytest.raises(LmforgeError, match="'onnx-int8' is not available"):
        bench_model(folder, backends=["onnx-int8"])
    with pytest.raises(LmforgeError, match="length 4096 is out of range"):
        bench_model(tiny_model_dir, lengths=(4096,))


def _lmforge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lmforge.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_cli_bench_prints_the_json_document(home: Settings, tiny_model_dir: Path) -> None:
    registry = Registry(home)
    staging = registry.new_staging_dir()
    shutil.copytree(tiny_model_dir, staging, dirs_exist_ok=True)
    registry.register(
        "tiny",
        staging,
        task="classification",
        base_model="tiny",
        labels=["negative", "positive"],
        metrics={},
        baselines={},
    )
    result = _lmforge(
        "bench", "tiny", "--json", "--backend", "onnx-int8", "--length", "16",
        "--batch-size", "4", "--runs", "3", "--min-seconds", "0.05",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["model"] == "tiny:v1"
    assert [r["backend"] for r in doc["results"]] == ["onnx-int8", *BASELINES]
    assert all(r["error"] is None for r in doc["results"])
    assert doc["results"][0]["throughput"]["16"]["speedup_vs_torch_eager"] > 0

    bad = _lmforge("bench", "tiny", "--backend", "onnx-fp16")
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert bad.returncode == 2 and len(lines) == 1, bad.stderr
    assert "unknown backend 'onnx-fp16'" in lines[0]


def test_rounds_measure_every_subject_in_turn_and_report_medians(tiny_model_dir: Path) -> None:
    report = bench_model(
        tiny_model_dir, backends=["onnx-int8", "torch-fp32"], baselines=False, rounds=3, **SMALL
    )
    assert report.rounds == 3 and report.to_json()["settings"]["rounds"] == 3
    for r in report.results:
        assert r.error is None, r.error
        assert r.throughput[16].batches >= 9  # three rounds of at least three batches
        assert r.single[16].batches >= 9
    with pytest.raises(LmforgeError, match="rounds 0"):
        bench_model(tiny_model_dir, rounds=0, **SMALL)
