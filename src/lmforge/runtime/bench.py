"""`lmforge bench`: every backend of a version side by side, beside what a user writes by hand.

Everything is measured in one process and one run, so all numbers share the machine's state:
each backend's batch-1 latency and fixed-shape batch throughput, two baselines (plain
transformers fp32 eager, and transformers' text-classification pipeline), and the machine's own
fp32 and int8 matmul peaks, against which each backend's achieved GOP/s is reported. Inputs are
real texts (the version's test split where it still loads), packed to exact token lengths.
Throughput is measured at the batch size and at batch 1 on the same lengths, so a batch that
costs more per row than single rows shows. With several rounds every subject stays loaded and
they are measured in turn, round after round, and each figure is the median over the rounds.

This module runs the comparison; what is timed is in :mod:`lmforge.runtime.bench_subjects`,
the machine's peaks in :mod:`lmforge.runtime.peaks`, and the report and its ``--json`` document
in :mod:`lmforge.runtime.bench_report`.
"""

from __future__ import annotations

import gc
import json
import statistics
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.data.text import clean_text
from lmforge.errors import LmforgeError, describe_exception
from lmforge.models.meta import read_model_meta, require_classifier
from lmforge.models.tokenizer import TextTokenizer
from lmforge.progress import ProgressReporter, SilentProgress
from lmforge.runtime.backends import available_backends, check_backend, cpu_threads
from lmforge.runtime.bench_report import (
    TORCH_EAGER,
    BenchReport,
    BenchResult,
    config_size,
    flops_per_sequence,
)
from lmforge.runtime.bench_subjects import (
    BackendSubject,
    BenchInputs,
    PipelineBaseline,
    Subject,
    TorchEagerBaseline,
)
from lmforge.runtime.measure import Latency, Throughput, packed_rows
from lmforge.runtime.peaks import machine_info, measure_peaks

PIPELINE = "transformers-pipeline"
BASELINES = (TORCH_EAGER, PIPELINE)
INT8_BACKENDS = frozenset({"torch-int8", "onnx-int8"})
MIN_LENGTH = 8
MAX_TEXTS = 2000  # plenty of real tokens for every packed length; tokenising more is waste
PACKED_BATCHES = 8  # distinct batches cycled through per throughput measurement


def bench_texts(folder: Path, progress: ProgressReporter | None = None) -> tuple[list[str], str]:
    """Real texts and where they came from: the version's own test split when its recipe is
    there and its data still loads (about two seconds for 13k rows), else the built-in Rotten
    Tomatoes snippets. At most MAX_TEXTS, in a fixed shuffled order."""
    progress = progress or SilentProgress()
    texts: list[str] = []
    source = ""
    recipe_path = folder / "recipe.yaml"
    if recipe_path.is_file():
        from lmforge.data import prepare_data
        from lmforge.recipe import load_recipe

        try:
            data = prepare_data(load_recipe(recipe_path).data)
            texts = [str(t) for t in data.test["text"]]
            source = f"test split of {data.card['source']}"
        except LmforgeError as exc:
            progress.note(f"the version's test split is unavailable ({exc.problem})")
    if not texts:
        from lmforge.data.sources import load_builtin

        texts = [str(t) for t in load_builtin("rotten_tomatoes")["text"]]
        source = "builtin rotten_tomatoes"
    order = np.random.default_rng(0).permutation(len(texts))[:MAX_TEXTS]
    return [texts[i] for i in order], source


def _describe(exc: Exception) -> str:
    return exc.message if isinstance(exc, LmforgeError) else describe_exception(exc)


def _choose_backends(folder: Path, backends: Sequence[str] | None) -> list[str]:
    if backends is None:
        return available_backends(folder)
    for name in backends:
        check_backend(folder, name)
    return list(dict.fromkeys(backends))


def _read_config(folder: Path) -> dict[str, Any]:
    try:
        config: dict[str, Any] = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return config


def _check_settings(
    lengths: Sequence[int],
    config: dict[str, Any],
    batch_size: int,
    latency_runs: int,
    min_seconds: float,
    rounds: int,
) -> tuple[int, ...]:
    if not lengths:
        raise LmforgeError("no lengths to measure", "give at least one --length")
    limit = config_size(config, "max_position_embeddings")
    for length in lengths:
        if length < MIN_LENGTH or (limit is not None and length > limit):
            raise LmforgeError(
                f"length {length} is out of range for this model",
                f"use lengths from {MIN_LENGTH} to {limit or 'the model maximum'}",
            )
    if batch_size < 1 or latency_runs < 1 or min_seconds < 0 or rounds < 1:
        raise LmforgeError(
            f"bad bench settings (batch size {batch_size}, runs {latency_runs}, "
            f"min seconds {min_seconds}, rounds {rounds})",
            "use a batch size, runs and rounds of at least 1, and min seconds of at least 0",
        )
    return tuple(dict.fromkeys(lengths))


def _model_ref(folder: Path) -> str:
    try:
        meta = json.loads((folder / "version.json").read_text())
        return f"{meta['name']}:v{meta['version']}"
    except (OSError, ValueError, KeyError, TypeError):
        return folder.name


def bench_model(
    folder: Path,
    *,
    backends: Sequence[str] | None = None,
    lengths: Sequence[int] = (64, 128),
    batch_size: int = 32,
    latency_runs: int = 50,
    min_seconds: float = 1.0,
    baselines: bool = True,
    baseline_folder: Path | None = None,
    rounds: int = 1,
    progress: ProgressReporter | None = None,
) -> BenchReport:
    """Measure every backend of the version in ``folder`` (or those named), its baselines and the
    machine's peaks, one after another in this process, on the same real texts.

    The baselines (torch eager, transformers' pipeline) run the model in ``baseline_folder``,
    default ``folder``: for a compressed version, pass its uncompressed parent, so speed-ups
    are against what the user had before compressing.

    ``rounds`` > 1 keeps every subject loaded and measures them in turn that many times (the
    medians are reported), so a noisy neighbour on a shared machine slows them all alike.

    A backend or baseline that fails to load or run is reported with its error; wrong settings
    and unknown backend names raise :class:`LmforgeError` before anything is measured.
    """
    progress = progress or SilentProgress()
    meta = require_classifier(read_model_meta(folder), folder)
    names = _choose_backends(folder, backends)
    config = _read_config(folder)
    lengths = _check_settings(lengths, config, batch_size, latency_runs, min_seconds, rounds)
    threads = cpu_threads()

    texts, source = bench_texts(folder, progress)
    prefix, max_length = meta.text_prefix, meta.max_length
    cleaned = [t for t in (clean_text(t, meta.cleaning) for t in texts) if t]
    if not cleaned:
        raise LmforgeError(f"no texts to measure with: {source} is empty", "use another version")
    rows = TextTokenizer(folder, max_length, prefix)(cleaned)
    inputs = BenchInputs(
        texts=[prefix + t for t in cleaned[:latency_runs]],
        rows=rows[:latency_runs],
        corpus=rows,
        packed={n: packed_rows(rows, n, batch_size * PACKED_BATCHES) for n in lengths},
        max_length=max_length,
        batch_size=batch_size,
    )
    subjects: list[tuple[str, str, Callable[[], Subject]]] = [
        (name, "backend", partial(BackendSubject, folder, name, threads, inputs)) for name in names
    ]
    reference = baseline_folder or folder
    if baselines:
        subjects.append(
            (TORCH_EAGER, "baseline", partial(TorchEagerBaseline, reference, threads, inputs))
        )
        subjects.append(
            (PIPELINE, "baseline", partial(PipelineBaseline, reference, threads, inputs))
        )
    flops = {n: f for n in lengths if (f := flops_per_sequence(config, n)) is not None}
    reference_config = _read_config(reference)
    reference_flops = {
        n: f for n in lengths if (f := flops_per_sequence(reference_config, n)) is not None
    }

    progress.start("bench", total=1 + rounds * len(subjects) * (1 + 2 * len(lengths)))
    try:
        peaks = measure_peaks(threads, min_seconds=max(min_seconds / 2, 0.05))
        progress.advance()
        timing = _Timing(lengths, batch_size, latency_runs, min_seconds, progress)
        results = timing.run(subjects, rounds)
    finally:
        progress.stop()
    return BenchReport(
        model=_model_ref(folder),
        path=folder,
        machine=machine_info(threads, peaks),
        lengths=lengths,
        batch_size=batch_size,
        latency_runs=latency_runs,
        min_seconds=min_seconds,
        baselines=baselines,
        rounds=rounds,
        texts_source=source,
        texts_count=len(cleaned),
        flops=flops or None,
        results=results,
        baseline_model=_model_ref(reference),
        baseline_flops=reference_flops or None,
    )


class _Timing:
    """Measures subjects: batch-1 latency, then per length the batch throughput and batch-1
    throughput. Any failure is recorded on the subject's result (a corrupt file, a kernel the
    CPU lacks) so the others still report."""

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        latency_runs: int,
        min_seconds: float,
        progress: ProgressReporter,
    ) -> None:
        self.lengths = lengths
        self.batch_size = batch_size
        self.latency_runs = latency_runs
        self.min_seconds = min_seconds
        self.progress = progress

    def run(
        self, subjects: Sequence[tuple[str, str, Callable[[], Subject]]], rounds: int
    ) -> list[BenchResult]:
        results = [
            BenchResult(name, kind, peak="int8" if name in INT8_BACKENDS else "fp32")
            for name, kind, _ in subjects
        ]
        latencies: dict[str, list[Latency]] = {name: [] for name, _, _ in subjects}
        batched: dict[tuple[str, int], list[Throughput]] = {}
        singles: dict[tuple[str, int], list[Throughput]] = {}
        loaded: dict[str, Subject] = {}
        steps = 1 + 2 * len(self.lengths)
        for _ in range(rounds):
            for (name, _, make), result in zip(subjects, results, strict=True):
                if result.error is not None:
                    self.progress.advance(steps)
                    continue
                subject: Subject | None = loaded.get(name)
                done = 0
                try:
                    if subject is None:
                        subject = make()
                        result.size_mb = subject.size_mb
                    latencies[name].append(subject.latency(self.latency_runs))
                    done += self._advance()
                    for n in self.lengths:
                        batch = subject.throughput(n, self.min_seconds, self.batch_size)
                        batched.setdefault((name, n), []).append(batch)
                        done += self._advance()
                        single = subject.throughput(n, self.min_seconds, 1)
                        singles.setdefault((name, n), []).append(single)
                        done += self._advance()
                    if rounds > 1:
                        loaded[name] = subject
                except Exception as exc:  # reported per subject: one bad file must not end it
                    result.error = _describe(exc)
                    self.progress.note(f"{name}: {result.error}")
                    self.progress.advance(steps - done)
                    loaded.pop(name, None)
                finally:
                    del subject
                    if name not in loaded:
                        gc.collect()  # free one model (and its thread pool) before the next
        loaded.clear()
        gc.collect()
        for result in results:
            if latencies[result.backend]:
                result.latency = _median_latency(latencies[result.backend])
            for n in self.lengths:
                if (result.backend, n) in batched:
                    result.throughput[n] = _median_throughput(batched[result.backend, n])
                if (result.backend, n) in singles:
                    result.single[n] = _median_throughput(singles[result.backend, n])
        return results

    def _advance(self) -> int:
        self.progress.advance()
        return 1


def _median_latency(runs: Sequence[Latency]) -> Latency:
    return Latency(
        p50_ms=statistics.median(r.p50_ms for r in runs),
        p99_ms=statistics.median(r.p99_ms for r in runs),
        runs=runs[0].runs,
    )


def _median_throughput(runs: Sequence[Throughput]) -> Throughput:
    """The median run's rate; batches counted over every run."""
    return Throughput(
        sequences_per_second=statistics.median(r.sequences_per_second for r in runs),
        batch_size=runs[0].batch_size,
        length=runs[0].length,
        batches=sum(r.batches for r in runs),
    )
