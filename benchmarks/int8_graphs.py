"""Where int8 inference time goes, and the ONNX Runtime graph variants tried against it.

Issue 26 asks why int8 reaches only a third of the machine's int8 matmul peak. This script
builds, from one registered classifier, the int8 graphs ONNX Runtime offers and times them side
by side with torch's, then profiles where the time of a batch goes:

1. variants, per-row milliseconds at 64 tokens for batches of 1, 8 and 32, interleaved over
   ``--rounds`` rounds (median): torch fp32 and fbgemm int8 (``quantize_dynamic``), ONNX fp32
   optimised, and ONNX dynamic per-channel int8 (QOperator, what ``lmforge compress`` builds)
   quantised after the transformer optimiser (the shipped order), before it, without it, with
   attention left unfused, with GELU approximated, without SkipLayerNorm fusion, and with only
   constant-weight MatMuls quantised;
2. ONNX Runtime's profiler on the shipped int8 graph at batch 32: the share of each op type;
3. torch's profiler on fbgemm int8 at batch 32;
4. one fp32 layer norm (with its residual add) at batch 32 × 64 × hidden in ONNX Runtime
   (SkipLayerNormalization, Add + LayerNormalization) and in torch.

    .venv/bin/python benchmarks/int8_graphs.py sentiment-en:v1 --rounds 5

Graphs are built in a temporary folder, once per run (about a minute).
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

LENGTH = 64
BATCHES = (1, 8, 32)

Build = Callable[[Path, Path, dict[str, int]], None]


def _optimised(fusion: dict[str, bool]) -> Build:
    def build(src: Path, out: Path, heads: dict[str, int]) -> None:
        from onnxruntime.transformers.fusion_options import FusionOptions
        from onnxruntime.transformers.optimizer import optimize_model

        options = FusionOptions("bert")
        for name, value in fusion.items():
            setattr(options, name, value)
        model = optimize_model(str(src), model_type="bert", optimization_options=options, **heads)
        model.save_model_to_file(str(out))

    return build


def _quantised(const_b_only: bool = False) -> Build:
    def build(src: Path, out: Path, heads: dict[str, int]) -> None:
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.quantization.shape_inference import quant_pre_process

        typed = out.with_name(out.name + ".typed.onnx")
        quant_pre_process(str(src), str(typed), skip_optimization=True, auto_merge=True)
        quantize_dynamic(
            str(typed),
            str(out),
            weight_type=QuantType.QInt8,
            per_channel=True,
            extra_options={"MatMulConstBOnly": const_b_only},
        )
        typed.unlink()

    return build


# name: (source graph, how it is built from it, what it shows)
GRAPHS: dict[str, tuple[str, Build, str]] = {
    "onnx-fp32-optimised": ("exported", _optimised({}), "fp32, fused (ONNX fp32 backend)"),
    "int8 after optimiser": ("onnx-fp32-optimised", _quantised(), "shipped: lmforge compress"),
    "int8, no optimiser": ("exported", _quantised(), "quantised as exported"),
    "int8, then optimiser": ("int8, no optimiser", _optimised({}), "optimiser on the int8 graph"),
    "int8, attention unfused": (
        "fused-no-attention",
        _quantised(),
        "no QAttention: fp32 scores",
    ),
    "int8, GELU approximated": ("fused-fast-gelu", _quantised(), "FastGelu (tanh) for GELU"),
    "int8, no SkipLayerNorm": ("fused-no-skip-ln", _quantised(), "Add + LayerNormalization"),
    "int8, weights-only MatMuls": (
        "exported",
        _quantised(const_b_only=True),
        "attention's own MatMuls stay fp32",
    ),
}
HELPERS: dict[str, tuple[str, Build]] = {
    "fused-no-attention": ("exported", _optimised({"enable_attention": False})),
    "fused-fast-gelu": ("exported", _optimised({"enable_gelu_approximation": True})),
    "fused-no-skip-ln": ("exported", _optimised({"enable_skip_layer_norm": False})),
}


def build_graphs(folder: Path, work: Path) -> dict[str, Path]:
    from lmforge.compress.onnx import export_onnx

    config = json.loads((folder / "config.json").read_text())
    heads = {"num_heads": config["num_attention_heads"], "hidden_size": config["hidden_size"]}
    paths = {"exported": export_onnx(folder, work / "exported.onnx")}
    pending = {**{k: (s, b) for k, (s, b, _) in GRAPHS.items()}, **HELPERS}
    while pending:
        for name, (source, build) in list(pending.items()):
            if source in paths:
                out = work / f"{len(paths)}.onnx"
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    build(paths[source], out, heads)
                paths[name] = out
                del pending[name]
    return paths


def load_subjects(folder: Path, graphs: dict[str, Path], threads: int) -> dict[str, Any]:
    from lmforge.runtime.backends import OnnxBackend, TorchBackend

    subjects: dict[str, Any] = {
        "torch-fp32": TorchBackend(folder, name="torch-fp32", threads=threads),
        "torch-int8 (fbgemm)": TorchBackend(folder, name="torch-int8", threads=threads),
    }
    for name in GRAPHS:
        subjects[name] = OnnxBackend(graphs[name], name=name, threads=threads)
    return subjects


def per_row_ms(
    subjects: dict[str, Any], rows: dict[int, np.ndarray], rounds: int
) -> dict[str, dict[int, float]]:
    """Median over rounds of milliseconds per row, every subject and batch size in turn."""
    samples: dict[tuple[str, int], list[float]] = collections.defaultdict(list)
    for forward in subjects.values():  # warm-up: kernel choice, thread pools
        for ids in rows.values():
            forward(ids, np.ones_like(ids))
    for _ in range(rounds):
        for name, forward in subjects.items():
            for size, ids in rows.items():
                mask = np.ones_like(ids)
                calls = max(2, 64 // size)
                start = time.perf_counter()
                for _ in range(calls):
                    forward(ids, mask)
                samples[name, size].append((time.perf_counter() - start) / calls / size * 1e3)
    return {
        name: {size: statistics.median(samples[name, size]) for size in rows} for name in subjects
    }


def ort_profile(path: Path, ids: np.ndarray, threads: int) -> dict[str, float]:
    """Share of kernel time per op type over 20 batches."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.profile_file_prefix = str(path.with_name("profile"))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    for _ in range(20):
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    times: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            times[event["args"]["op_name"]] += event["dur"]
    total = sum(times.values())
    return {op: t / total for op, t in times.most_common(8)}


def torch_profile(forward: Any, ids: np.ndarray) -> dict[str, float]:
    """Share of self CPU time per op over 5 batches."""
    from torch.profiler import ProfilerActivity, profile

    mask = np.ones_like(ids)
    forward(ids, mask)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            forward(ids, mask)
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows)
    return {e.key: e.self_cpu_time_total / total for e in rows[:6]}


def layer_norm_ms(hidden: int, threads: int, batch: int = 32) -> dict[str, float]:
    """One residual add + layer norm over batch × LENGTH × hidden floats, three ways."""
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper, numpy_helper

    shape: list[str | int | None] = ["b", "s", hidden]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("x", "skip")]
    output = [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)]
    weights = [
        numpy_helper.from_array(np.ones(hidden, np.float32), "gamma"),
        numpy_helper.from_array(np.zeros(hidden, np.float32), "beta"),
    ]
    fused = helper.make_node(
        "SkipLayerNormalization",
        ["x", "skip", "gamma", "beta"],
        ["y"],
        domain="com.microsoft",
        epsilon=1e-12,
    )
    plain = [
        helper.make_node("Add", ["x", "skip"], ["sum"]),
        helper.make_node("LayerNormalization", ["sum", "gamma", "beta"], ["y"], epsilon=1e-12),
    ]
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    x = np.random.default_rng(0).standard_normal((batch, LENGTH, hidden)).astype(np.float32)
    skip = np.random.default_rng(1).standard_normal((batch, LENGTH, hidden)).astype(np.float32)

    def timed(call: Callable[[], object], calls: int = 100) -> float:
        for _ in range(5):
            call()
        start = time.perf_counter()
        for _ in range(calls):
            call()
        return (time.perf_counter() - start) / calls * 1e3

    out: dict[str, float] = {}
    for name, nodes in (("ORT SkipLayerNormalization", [fused]), ("ORT Add+LayerNorm", plain)):
        graph = helper.make_graph(nodes, "ln", inputs, output, weights)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(
            helper.make_model(graph, opset_imports=opsets).SerializeToString(), options
        )

        def run(session: Any = session) -> object:
            return session.run(None, {"x": x, "skip": skip})

        out[name] = timed(run)
    norm = torch.nn.LayerNorm(hidden, eps=1e-12)
    tx, tskip = torch.from_numpy(x), torch.from_numpy(skip)
    with torch.inference_mode():
        out["torch add + layer_norm"] = timed(lambda: norm(tx + tskip))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("model", help="a registered classifier NAME[:VERSION] (uncompressed)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)

    import torch

    from lmforge.hardware import cpu_name
    from lmforge.registry import Registry
    from lmforge.runtime.backends import cpu_threads

    folder = Registry().get(args.model).path
    threads = cpu_threads()
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    vocab = json.loads((folder / "config.json").read_text())["vocab_size"]
    rows = {n: rng.integers(1000, vocab, (n, LENGTH)).astype(np.int64) for n in BATCHES}
    with tempfile.TemporaryDirectory(prefix="lmforge-int8-") as tmp:
        print("building graphs …", file=sys.stderr)
        graphs = build_graphs(folder, Path(tmp))
        subjects = load_subjects(folder, graphs, threads)
        print(f"timing {len(subjects)} subjects × {args.rounds} rounds …", file=sys.stderr)
        timings = per_row_ms(subjects, rows, args.rounds)
        ort_shares = ort_profile(graphs["int8 after optimiser"], rows[32], threads)
        torch_shares = torch_profile(subjects["torch-int8 (fbgemm)"], rows[32])
    hidden = json.loads((folder / "config.json").read_text())["hidden_size"]
    norms = layer_norm_ms(hidden, threads)

    print(f"{cpu_name()}, {threads} threads; {args.model}; {LENGTH} tokens; median of rounds\n")
    print("| variant | " + " | ".join(f"ms/row b{n}" for n in BATCHES) + " | b32 ÷ b1 | note |")
    print("|---|" + "---:|" * (len(BATCHES) + 1) + "---|")
    notes = {name: note for name, (_, _, note) in GRAPHS.items()}
    for name, by_size in timings.items():
        cells = " | ".join(f"{by_size[n]:.2f}" for n in BATCHES)
        print(f"| {name} | {cells} | {by_size[32] / by_size[1]:.2f} | {notes.get(name, '')} |")
    for title, shares in (
        ("ONNX Runtime int8, batch 32: share of kernel time", ort_shares),
        ("torch fbgemm int8, batch 32: share of self CPU time", torch_shares),
    ):
        print(f"\n{title}: " + ", ".join(f"{k} {100 * v:.1f} %" for k, v in shares.items()))
    print(
        f"\nresidual add + layer norm, 32 × {LENGTH} × {hidden} fp32: "
        + ", ".join(f"{k} {v:.2f} ms" for k, v in norms.items())
    )
    if args.json:
        payload = {
            "cpu": cpu_name(),
            "threads": threads,
            "model": args.model,
            "per_row_ms": {k: {str(n): v for n, v in d.items()} for k, d in timings.items()},
            "ort_profile": ort_shares,
            "torch_profile": torch_shares,
            "layer_norm_ms": norms,
        }
        args.json.write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
