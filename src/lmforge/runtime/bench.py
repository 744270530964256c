"""`lmforge bench`: every backend of a version side by side, beside what a user writes by hand.

Everything is measured in one process and one run, so all numbers share the machine's state:
each backend's batch-1 latency and fixed-shape batch throughput, two baselines (plain
transformers fp32 eager, and transformers' text-classification pipeline), and the machine's own
fp32 and int8 matmul peaks, against which each backend's achieved GOP/s is reported. Inputs are
real texts (the version's test split where it still loads), packed to exact token lengths.
"""

from __future__ import annotations

import gc
import importlib.metadata
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lmforge.data.text import clean_text
from lmforge.errors import LmforgeError, describe_exception
from lmforge.models.loading import from_pretrained
from lmforge.models.meta import read_model_meta, require_classifier
from lmforge.models.tokenizer import TextTokenizer
from lmforge.progress import ProgressReporter, SilentProgress
from lmforge.runtime.backends import (
    Backend,
    available_backends,
    check_backend,
    cpu_threads,
    load_backend,
)
from lmforge.runtime.measure import (
    Latency,
    Throughput,
    measure_latency,
    measure_throughput,
    packed_rows,
    time_latency,
    time_throughput,
)

TORCH_EAGER = "torch-eager"
PIPELINE = "transformers-pipeline"
BASELINES = (TORCH_EAGER, PIPELINE)
INT8_BACKENDS = frozenset({"torch-int8", "onnx-int8"})
MIN_LENGTH = 8
MAX_TEXTS = 2000  # plenty of real tokens for every packed length; tokenising more is waste
PACKED_BATCHES = 8  # distinct batches cycled through per throughput measurement
PEAK_SIZE = 1024  # square matrices for the peak matmuls: large enough to keep every core busy
ISA_FLAGS = frozenset(
    {"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_bf16", "amx_int8"}
)


@dataclass(frozen=True)
class Peaks:
    """The machine's own matmul rates, the ceiling a backend's GOP/s is measured against."""

    fp32_gflops: float
    int8_gops: float
    matrix_size: int


@dataclass(frozen=True)
class Machine:
    cpu: str
    isa: tuple[str, ...]
    native_bf16: bool
    int8_dot: bool
    threads: int
    versions: dict[str, str]
    peaks: Peaks


@dataclass
class BenchResult:
    """One backend or baseline; ``error`` is set (and the numbers partial) when it failed."""

    backend: str
    kind: str  # "backend" or "baseline"
    peak: str  # which machine peak its GOP/s is compared with: "fp32" or "int8"
    size_mb: float | None = None
    latency: Latency | None = None
    throughput: dict[int, Throughput] = field(default_factory=dict)
    error: str | None = None


@dataclass
class BenchReport:
    model: str
    path: Path
    machine: Machine
    lengths: tuple[int, ...]
    batch_size: int
    latency_runs: int
    min_seconds: float
    baselines: bool
    texts_source: str
    texts_count: int
    flops: dict[int, float] | None  # per sequence at each length; None for unknown configs
    results: list[BenchResult]
    # The baselines run the uncompressed parent of a compressed version (see bench_model).
    baseline_model: str = ""
    baseline_flops: dict[int, float] | None = None

    def result(self, backend: str) -> BenchResult | None:
        return next((r for r in self.results if r.backend == backend), None)

    def gops(self, result: BenchResult, length: int) -> float | None:
        run = result.throughput.get(length)
        flops = self.baseline_flops if result.kind == "baseline" else self.flops
        if run is None or flops is None:
            return None
        return flops[length] * run.sequences_per_second / 1e9

    def share_of_peak(self, result: BenchResult, length: int) -> float | None:
        gops = self.gops(result, length)
        peaks = self.machine.peaks
        peak = peaks.int8_gops if result.peak == "int8" else peaks.fp32_gflops
        return None if gops is None else gops / peak

    def speedup(self, result: BenchResult, length: int) -> float | None:
        """Throughput over torch-eager's at the same length (the issue's ≥ 6× target)."""
        eager = self.result(TORCH_EAGER)
        ours = result.throughput.get(length)
        theirs = eager.throughput.get(length) if eager else None
        if ours is None or theirs is None:
            return None
        return ours.sequences_per_second / theirs.sequences_per_second

    def latency_speedup(self, result: BenchResult) -> float | None:
        """torch-eager's batch-1 p50 over this one's: how many times faster one request is."""
        eager = self.result(TORCH_EAGER)
        if result.latency is None or eager is None or eager.latency is None:
            return None
        return eager.latency.p50_ms / result.latency.p50_ms

    def to_json(self) -> dict[str, Any]:
        """The stable ``bench --json`` document (every key is described in docs/cli.md)."""
        m = self.machine
        return {
            "model": self.model,
            "path": str(self.path),
            "machine": {
                "cpu": m.cpu,
                "isa": list(m.isa),
                "native_bf16": m.native_bf16,
                "int8_dot": m.int8_dot,
                "threads": m.threads,
                **m.versions,
                "peaks": {
                    "fp32_gflops": _round(m.peaks.fp32_gflops),
                    "int8_gops": _round(m.peaks.int8_gops),
                    "matrix_size": m.peaks.matrix_size,
                },
            },
            "settings": {
                "lengths": list(self.lengths),
                "batch_size": self.batch_size,
                "latency_runs": self.latency_runs,
                "min_seconds": self.min_seconds,
                "baselines": self.baselines,
            },
            "texts": {"source": self.texts_source, "count": self.texts_count},
            "gflop_per_sequence": None
            if self.flops is None
            else {str(n): _round(f / 1e9) for n, f in self.flops.items()},
            "baseline_model": self.baseline_model,
            "baseline_gflop_per_sequence": None
            if self.baseline_flops is None
            else {str(n): _round(f / 1e9) for n, f in self.baseline_flops.items()},
            "results": [self._result_json(r) for r in self.results],
        }

    def _result_json(self, r: BenchResult) -> dict[str, Any]:
        latency = None
        if r.latency is not None:
            latency = {
                "p50_ms": _round(r.latency.p50_ms),
                "p99_ms": _round(r.latency.p99_ms),
                "runs": r.latency.runs,
            }
        return {
            "backend": r.backend,
            "kind": r.kind,
            "peak": r.peak,
            "size_mb": _round(r.size_mb),
            "latency": latency,
            "latency_speedup_vs_torch_eager": _round(self.latency_speedup(r)),
            "throughput": {
                str(n): {
                    "sequences_per_second": _round(t.sequences_per_second),
                    "batches": t.batches,
                    "gops": _round(self.gops(r, n)),
                    "share_of_peak": _round(self.share_of_peak(r, n)),
                    "speedup_vs_torch_eager": _round(self.speedup(r, n)),
                }
                for n, t in r.throughput.items()
            },
            "error": r.error,
        }


def _round(value: float | None, digits: int = 4) -> float | None:
    """To ``digits`` significant digits: timings on a shared CPU carry no more."""
    return None if value is None else float(f"{value:.{digits}g}")


def flops_per_sequence(config: dict[str, Any], length: int) -> float | None:
    """Floating-point operations (2 per multiply-add) of one encoder forward at ``length`` tokens.

    Per layer, with hidden size H, attention width A = heads × (H // heads) (= H for every
    common model), feed-forward size I and length L: Q/K/V projections 2·L·H·3A, attention
    scores and weighted sum 2·2·L²·A, output projection 2·L·A·H, feed-forward 2·2·L·H·I.
    Embeddings, layer norms, softmax, pooler and head are left out (well under 1 %). None when
    the config does not name these sizes (BERT-style and DistilBERT-style keys are read).
    """
    layers = _first(config, "num_hidden_layers", "n_layers", "num_layers")
    hidden = _first(config, "hidden_size", "dim", "d_model")
    inner = _first(config, "intermediate_size", "hidden_dim", "ffn_dim")
    heads = _first(config, "num_attention_heads", "n_heads") or 1
    if not (layers and hidden and inner):
        return None
    width = heads * (hidden // heads)
    per_layer = (
        2 * length * hidden * 3 * width
        + 4 * length * length * width
        + 2 * length * width * hidden
        + 4 * length * hidden * inner
    )
    return float(layers * per_layer)


def _first(config: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _best_rate(call: Callable[[], object], ops: float, min_seconds: float) -> float:
    """Best ops/s over calls repeated for ``min_seconds`` (at least 5): the least-disturbed
    call is the closest to what the hardware can do on a shared machine."""
    call()
    call()  # warm-up: allocation, kernel choice, thread pool start
    best, calls, start = 0.0, 0, time.perf_counter()
    while calls < 5 or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        call()
        best = max(best, ops / (time.perf_counter() - t0))
        calls += 1
    return best


def measure_peaks(threads: int, *, size: int = PEAK_SIZE, min_seconds: float = 0.5) -> Peaks:
    """fp32 GFLOP/s of torch.mm and int8 GOP/s of ONNX Runtime's MatMulInteger (uint8 × int8 →
    int32, the kernel its dynamic int8 models run), both on ``threads`` threads."""
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper, numpy_helper

    ops = 2.0 * size**3
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen)
    b = torch.randn(size, size, generator=gen)
    fp32 = _best_rate(lambda: torch.mm(a, b), ops, min_seconds)

    rng = np.random.default_rng(0)
    weights = rng.integers(-128, 128, (size, size), dtype=np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])],
        "int8_peak",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [size, size])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [size, size])],
        initializer=[numpy_helper.from_array(weights, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    feed = {"A": rng.integers(0, 256, (size, size), dtype=np.uint8)}
    int8 = _best_rate(lambda: session.run(None, feed), ops, min_seconds)
    return Peaks(fp32_gflops=fp32 / 1e9, int8_gops=int8 / 1e9, matrix_size=size)


def machine_info(threads: int, peaks: Peaks) -> Machine:
    from lmforge.hardware import cpu_flags, cpu_has_int8_dot, cpu_has_native_bf16, cpu_name

    versions = {}
    for package in ("torch", "transformers", "onnxruntime"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return Machine(
        cpu=cpu_name(),
        isa=tuple(sorted(cpu_flags() & ISA_FLAGS)),
        native_bf16=cpu_has_native_bf16(),
        int8_dot=cpu_has_int8_dot(),
        threads=threads,
        versions=versions,
        peaks=peaks,
    )


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


@dataclass
class _Inputs:
    """What every subject is measured on: the same texts, token rows and packed batches."""

    texts: list[str]  # batch-1 texts, cleaned and prefixed as the model sees them
    rows: list[list[int]]  # their token ids, truncated to the version's max_length
    corpus: list[list[int]]  # every text's token ids, the material packed batches are cut from
    packed: dict[int, np.ndarray]  # rows of exactly L tokens per length L
    max_length: int
    batch_size: int
    _long: dict[int, list[str]] = field(default_factory=dict)

    def long_texts(self, length: int, decode: Callable[[np.ndarray], list[str]]) -> list[str]:
        """Texts of about 2 × ``length`` tokens (decoded packed rows), so a baseline truncating
        to ``length`` runs at exactly that length, as every backend does."""
        if length not in self._long:
            rows = packed_rows(self.corpus, 2 * length, len(self.packed[length]))
            self._long[length] = decode(rows[:, 1:-1])
        return self._long[length]


class _Subject(Protocol):
    size_mb: float | None

    def latency(self, runs: int) -> Latency: ...
    def throughput(self, length: int, min_seconds: float) -> Throughput: ...


class _BackendSubject:
    def __init__(self, folder: Path, name: str, threads: int, inputs: _Inputs) -> None:
        self.backend: Backend = load_backend(folder, name, threads=threads)
        self.inputs = inputs
        self.size_mb: float | None = self.backend.size_mb()

    def latency(self, runs: int) -> Latency:
        return measure_latency(self.backend, self.inputs.rows, runs=runs)

    def throughput(self, length: int, min_seconds: float) -> Throughput:
        return measure_throughput(
            self.backend,
            self.inputs.packed[length],
            batch_size=self.inputs.batch_size,
            min_seconds=min_seconds,
        )


class _TorchEager:
    """What a user writes by hand: from_pretrained in fp32 with transformers' default attention,
    the tokenizer's fixed-length padded output, ``torch.no_grad()``."""

    def __init__(self, folder: Path, threads: int, inputs: _Inputs) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from lmforge.models.classifier import quiet_transformers

        torch.set_num_threads(threads)
        with quiet_transformers():
            self.model = from_pretrained(
                AutoModelForSequenceClassification,
                str(folder),
                dtype=torch.float32,  # transformers 5 defaults to the saved dtype
            )
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.model.eval()
        self.inputs = inputs
        self.size_mb = _file_mb(folder / "model.safetensors")
        self._torch = torch

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> object:
        torch = self._torch
        with torch.no_grad():
            return self.model(
                input_ids=torch.from_numpy(input_ids),
                attention_mask=torch.from_numpy(attention_mask),
            ).logits

    def latency(self, runs: int) -> Latency:
        return measure_latency(self.forward, self.inputs.rows, runs=runs)

    def throughput(self, length: int, min_seconds: float) -> Throughput:
        texts = self.inputs.long_texts(length, _decoder(self.tokenizer))
        encoded = self.tokenizer(
            texts, padding="max_length", truncation=True, max_length=length, return_tensors="np"
        )
        ids = np.asarray(encoded["input_ids"], dtype=np.int64)
        return measure_throughput(
            self.forward, ids, batch_size=self.inputs.batch_size, min_seconds=min_seconds
        )


class _Pipeline:
    """``transformers.pipeline("text-classification")`` on the CPU, timed end to end: texts in,
    labels out, its own tokenising and batching included."""

    def __init__(self, folder: Path, threads: int, inputs: _Inputs) -> None:
        import torch
        from transformers import pipeline

        from lmforge.models.classifier import quiet_transformers

        torch.set_num_threads(threads)
        with quiet_transformers():
            self.pipe = pipeline(
                "text-classification", model=str(folder), tokenizer=str(folder), device=-1
            )
        self.inputs = inputs
        self.size_mb = _file_mb(folder / "model.safetensors")

    def latency(self, runs: int) -> Latency:
        texts, limit = self.inputs.texts, self.inputs.max_length
        return time_latency(
            lambda i: self.pipe(texts[i % len(texts)], truncation=True, max_length=limit),
            runs=runs,
        )

    def throughput(self, length: int, min_seconds: float) -> Throughput:
        size = self.inputs.batch_size
        texts = self.inputs.long_texts(length, _decoder(self.pipe.tokenizer))
        batches = [texts[i : i + size] for i in range(0, len(texts) - size + 1, size)]
        return time_throughput(
            lambda i: self.pipe(
                batches[i % len(batches)], batch_size=size, truncation=True, max_length=length
            ),
            batch_size=size,
            length=length,
            min_seconds=min_seconds,
        )


def _decoder(tokenizer: Any) -> Callable[[np.ndarray], list[str]]:
    def decode(rows: np.ndarray) -> list[str]:
        return [str(t) for t in tokenizer.batch_decode(rows.tolist(), skip_special_tokens=True)]

    return decode


def _file_mb(path: Path) -> float | None:
    return path.stat().st_size / 1e6 if path.is_file() else None


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
) -> tuple[int, ...]:
    if not lengths:
        raise LmforgeError("no lengths to measure", "give at least one --length")
    limit = _first(config, "max_position_embeddings")
    for length in lengths:
        if length < MIN_LENGTH or (limit is not None and length > limit):
            raise LmforgeError(
                f"length {length} is out of range for this model",
                f"use lengths from {MIN_LENGTH} to {limit or 'the model maximum'}",
            )
    if batch_size < 1 or latency_runs < 1 or min_seconds < 0:
        raise LmforgeError(
            f"bad bench settings (batch size {batch_size}, runs {latency_runs}, "
            f"min seconds {min_seconds})",
            "use a batch size and runs of at least 1, and min seconds of at least 0",
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
    progress: ProgressReporter | None = None,
) -> BenchReport:
    """Measure every backend of the version in ``folder`` (or those named), its baselines and the
    machine's peaks, one after another in this process, on the same real texts.

    The baselines (torch eager, transformers' pipeline) run the model in ``baseline_folder``,
    default ``folder``: for a compressed version, pass its uncompressed parent, so speed-ups
    are against what the user had before compressing.

    A backend or baseline that fails to load or run is reported with its error; wrong settings
    and unknown backend names raise :class:`LmforgeError` before anything is measured.
    """
    progress = progress or SilentProgress()
    meta = require_classifier(read_model_meta(folder), folder)
    names = _choose_backends(folder, backends)
    config = _read_config(folder)
    lengths = _check_settings(lengths, config, batch_size, latency_runs, min_seconds)
    threads = cpu_threads()

    texts, source = bench_texts(folder, progress)
    prefix, max_length = meta.text_prefix, meta.max_length
    cleaned = [t for t in (clean_text(t, meta.cleaning) for t in texts) if t]
    if not cleaned:
        raise LmforgeError(f"no texts to measure with: {source} is empty", "use another version")
    rows = TextTokenizer(folder, max_length, prefix)(cleaned)
    inputs = _Inputs(
        texts=[prefix + t for t in cleaned[:latency_runs]],
        rows=rows[:latency_runs],
        corpus=rows,
        packed={n: packed_rows(rows, n, batch_size * PACKED_BATCHES) for n in lengths},
        max_length=max_length,
        batch_size=batch_size,
    )
    subjects: list[tuple[str, str, Callable[[], _Subject]]] = [
        (name, "backend", partial(_BackendSubject, folder, name, threads, inputs)) for name in names
    ]
    reference = baseline_folder or folder
    if baselines:
        subjects.append((TORCH_EAGER, "baseline", partial(_TorchEager, reference, threads, inputs)))
        subjects.append((PIPELINE, "baseline", partial(_Pipeline, reference, threads, inputs)))
    flops = {n: f for n in lengths if (f := flops_per_sequence(config, n)) is not None}
    reference_config = _read_config(reference)
    reference_flops = {
        n: f for n in lengths if (f := flops_per_sequence(reference_config, n)) is not None
    }

    progress.start("bench", total=1 + len(subjects) * (1 + len(lengths)))
    try:
        peaks = measure_peaks(threads, min_seconds=max(min_seconds / 2, 0.05))
        progress.advance()
        results = [
            _measure(name, kind, make, lengths, latency_runs, min_seconds, progress)
            for name, kind, make in subjects
        ]
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
        texts_source=source,
        texts_count=len(cleaned),
        flops=flops or None,
        results=results,
        baseline_model=_model_ref(reference),
        baseline_flops=reference_flops or None,
    )


def _measure(
    name: str,
    kind: str,
    make: Callable[[], _Subject],
    lengths: Sequence[int],
    latency_runs: int,
    min_seconds: float,
    progress: ProgressReporter,
) -> BenchResult:
    """Load, time batch-1 latency, then throughput per length; any failure is recorded on the
    result (a corrupt file, a kernel the CPU lacks) so the other backends still report."""
    result = BenchResult(name, kind, peak="int8" if name in INT8_BACKENDS else "fp32")
    steps = 1 + len(lengths)
    subject: _Subject | None = None
    try:
        subject = make()
        result.size_mb = subject.size_mb
        result.latency = subject.latency(latency_runs)
        progress.advance()
        steps -= 1
        for length in lengths:
            result.throughput[length] = subject.throughput(length, min_seconds)
            progress.advance()
            steps -= 1
    except Exception as exc:  # reported per backend, by design: one bad file must not end the run
        result.error = _describe(exc)
        progress.note(f"{name}: {result.error}")
        progress.advance(steps)
    finally:
        del subject
        gc.collect()  # free one model (and its thread pool) before the next is timed
    return result
