"""The recipe: one typed, validated description of a whole lmforge job.

Every section is a pydantic model that rejects unknown keys, so a typo fails loudly instead of
being silently ignored. Defaults and meanings live here: ``reference.py`` renders them as
docs/recipe.md and as each task's commented template (``lmforge recipe init``), and they are
exported with the JSON Schema (``lmforge schema``).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, Field, model_validator

from lmforge.recipe.multitask import MultitaskSection
from lmforge.recipe.recommendation import RecommendationSection

# Section and SourceConfig live in source.py (multitask.py builds on them); imported from here.
from lmforge.recipe.source import Section as Section
from lmforge.recipe.source import SourceConfig as SourceConfig

TaskName = Literal[
    "classification",
    "similarity",
    "generation",
    "assistant",
    "pretrain",
    "recommendation",
    "multitask",
]
Precision = Literal["auto", "fp32", "bf16"]
Stage = Literal["candidate", "production", "archived"]
BaselineName = Literal["majority", "tfidf_lr", "snownlp", "lexicon_lm", "lexicon_vader"]
MetricName = Literal["accuracy", "macro_f1", "loss"]

# LoRA's layers: the recipe's default names an encoder's; a decoder not told otherwise adapts
# its own Llama-style projections (those it has).
ENCODER_LORA_TARGETS = ("query", "key", "value", "dense")
DECODER_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class CleaningConfig(Section):
    """Text normalisation and filtering, applied before splitting."""

    unicode_nfkc: bool = Field(default=True, description="Apply Unicode NFKC normalisation.")
    collapse_whitespace: bool = Field(
        default=True, description="Collapse runs of whitespace (newlines included) to one space."
    )
    dedupe: bool = Field(default=True, description="Drop exact duplicates of (text, label).")
    min_chars: Annotated[int, Field(ge=0)] = Field(
        default=1, description="Drop texts shorter than this many characters."
    )
    max_chars: Annotated[int, Field(gt=0)] = Field(
        default=5000, description="Drop texts longer than this many characters."
    )


class SplitConfig(Section):
    """Deterministic, stratified train/validation/test split."""

    validation: Annotated[float, Field(gt=0, lt=0.5)] = Field(
        default=0.1, description="Share of rows for validation (early stopping, model choice)."
    )
    test: Annotated[float, Field(gt=0, lt=0.5)] = Field(
        default=0.1, description="Share of rows held out for the final evaluation."
    )
    seed: int = Field(default=42, description="Seed of the split.")


class DataConfig(Section):
    """The rows to learn from: where they come from, how they are cleaned and split."""

    source: SourceConfig
    cleaning: CleaningConfig = CleaningConfig()
    split: SplitConfig = SplitConfig()


class ModelConfig(Section):
    """The base model the job starts from."""

    base: str = Field(
        default="minilm-l6",
        description="A catalogue name (minilm-l6, multilingual-e5-small) or a local HF folder.",
    )
    text_prefix: str | None = Field(
        default=None,
        description="Prepended to every text, e.g. 'query: ' for e5; default: the catalogue's.",
    )
    dropout: Annotated[float, Field(ge=0, lt=1)] | None = Field(
        default=None, description="Classifier dropout; default: the base model's."
    )


class LoraConfig(Section):
    """LoRA adapters (used when adaptation.method is lora)."""

    r: Annotated[int, Field(gt=0)] = Field(default=16, description="LoRA rank.")
    alpha: Annotated[int, Field(gt=0)] = Field(default=32, description="LoRA scaling alpha.")
    dropout: Annotated[float, Field(ge=0, lt=1)] = Field(default=0.05, description="LoRA dropout.")
    target_modules: list[str] = Field(
        default_factory=lambda: list(ENCODER_LORA_TARGETS),
        description="Names of the linear layers that get adapters. Left out, a decoder "
        "(generation) adapts its q/k/v/o and gate/up/down projections instead.",
    )


class AdaptationConfig(Section):
    """Which weights training changes."""

    method: Literal["full", "lora"] = Field(
        default="full", description="Fine-tune all weights ('full') or LoRA adapters ('lora')."
    )
    lora: LoraConfig = LoraConfig()
    freeze_embeddings: bool = Field(
        default=False,
        description="Freeze the token-embedding table (large vocabularies dominate training cost).",
    )


class EarlyStoppingConfig(Section):
    """Stopping when the validation metric stops improving (the best weights are kept).
    Similarity and generation validate on held-out loss: they stop early only with metric
    loss, and otherwise train their epochs through."""

    enabled: bool = Field(default=True, description="Stop when validation stops improving.")
    metric: MetricName = Field(default="macro_f1", description="Validation metric to watch.")
    patience: Annotated[int, Field(ge=1)] = Field(
        default=2, description="Evaluations without improvement before stopping."
    )


class TrainingConfig(Section):
    """The training loop: length, batch, optimiser, precision and validation."""

    epochs: Annotated[float, Field(gt=0)] = Field(default=3, description="Passes over the data.")
    max_steps: Annotated[int, Field(gt=0)] | None = Field(
        default=None, description="Stop after this many optimiser steps (overrides epochs)."
    )
    batch_size: Annotated[int, Field(gt=0)] = Field(default=32, description="Rows per step.")
    gradient_accumulation: Annotated[int, Field(ge=1)] = Field(
        default=1, description="Micro-batches accumulated into one optimiser step."
    )
    learning_rate: Annotated[float, Field(gt=0)] = Field(default=5e-5, description="Peak LR.")
    weight_decay: Annotated[float, Field(ge=0)] = Field(default=0.01, description="AdamW decay.")
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = Field(
        default=0.06, description="Share of steps with linear warm-up."
    )
    max_length: Annotated[int, Field(ge=8, le=8192)] = Field(
        default=128, description="Tokens per text; longer texts are truncated."
    )
    precision: Precision = Field(
        default="auto",
        description="bf16 autocast, fp32, or 'auto': bf16 where the hardware computes it natively "
        "(AVX-512 BF16/AMX CPUs, recent GPUs), else fp32 — emulated bf16 is many times slower.",
    )
    seed: int = Field(default=42, description="Seed of initialisation, shuffling and dropout.")
    eval_every_steps: Annotated[int, Field(gt=0)] | None = Field(
        default=None, description="Validate every N steps; default: once per epoch."
    )
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    class_weights: Literal["none", "balanced"] = Field(
        default="none",
        description="Classification only: 'balanced' weighs the loss of each class by "
        "n_rows / (n_classes * rows_of_class) over the training labels, so a skewed set does "
        "not teach the majority class.",
    )
    num_threads: Annotated[int, Field(gt=0)] | None = Field(
        default=None, description="CPU threads; default: all cores."
    )


class EvaluationConfig(Section):
    """What the model is compared with on the held-out test split."""

    baselines: list[BaselineName] = Field(
        default_factory=lambda: list[BaselineName](["majority", "tfidf_lr"]),
        description="Baselines trained and scored on the same split: majority, tfidf_lr, "
        "snownlp (Chinese sentiment), lexicon_lm / lexicon_vader (English sentiment lexicons "
        "Loughran–McDonald and VADER, untrained; negative/positive or negative/neutral/positive).",
    )


class RegistryConfig(Section):
    """Registering the trained model as a new version."""

    enabled: bool = Field(default=True, description="Register the trained model as a version.")
    name: str | None = Field(
        default=None, description="Registered model name; default: the recipe name."
    )
    stage: Stage = Field(default="candidate", description="Stage of the new version.")
    allow_below_baseline: bool = Field(
        default=False,
        description="classification: register the model even when its test macro-F1 is no "
        "better than the majority baseline's (by default such a run is not registered).",
    )


CompressFormat = Literal[
    "torch-fp32",
    "torch-bf16",
    "torch-int8",
    "onnx-fp32",
    "onnx-int8-dynamic",
    "onnx-int8-per-channel",
    "onnx-int8-static",
]
CompressStructure = Literal["original", "pruned", "distilled"]


class PruneConfig(Section):
    """The pruned structure: attention heads and FFN neurons removed, then recovered."""

    head_fraction: Annotated[float, Field(ge=0, lt=1)] = Field(
        default=0.25, description="Share of attention heads removed (least important first)."
    )
    ffn_fraction: Annotated[float, Field(ge=0, lt=1)] = Field(
        default=0.5, description="Share of FFN neurons removed (least important first)."
    )
    recovery_epochs: Annotated[float, Field(gt=0)] = Field(
        default=1.0, description="Epochs of recovery fine-tuning (distilled from the original)."
    )


class DistillConfig(Section):
    """The distilled structure: a shallower student trained on the model's soft labels."""

    layers: Annotated[int, Field(ge=1)] = Field(
        default=3, description="Encoder layers of the student (taken evenly from the teacher)."
    )
    epochs: Annotated[float, Field(gt=0)] = Field(default=3.0, description="Training epochs.")
    temperature: Annotated[float, Field(gt=0)] = Field(
        default=2.0, description="Softmax temperature of the soft-label loss."
    )
    alpha: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.5, description="Weight of the soft-label loss (the rest: cross-entropy)."
    )
    learning_rate: Annotated[float, Field(gt=0)] = Field(default=1e-4, description="Peak LR.")


class CompressConfig(Section):
    """Variants of a trained classifier: structures × numeric formats, each evaluated on the test
    split and benchmarked; the fastest within the accuracy budget is registered."""

    enabled: bool = Field(
        default=False, description="Compress right after `lmforge run` registers the model."
    )
    structures: list[CompressStructure] = Field(
        default_factory=lambda: list[CompressStructure](["original", "pruned", "distilled"]),
        description="Model structures to try: the trained model, a pruned one, a distilled one.",
    )
    formats: list[CompressFormat] | None = Field(
        default=None,
        description="Numeric formats to try on each structure; default: all, except torch-bf16 "
        "where the CPU has no native bf16 (emulated bf16 is many times slower than fp32).",
    )
    max_accuracy_drop: Annotated[float, Field(ge=0, le=100)] = Field(
        default=1.0,
        description="Largest test-accuracy loss (in points) a chosen variant may have.",
    )
    calibration_rows: Annotated[int, Field(ge=32)] = Field(
        default=256, description="Training rows used to calibrate static int8 (at least 32)."
    )
    optimize_graph: bool = Field(
        default=True,
        description="Fuse attention, GELU and layer norms with ONNX Runtime's "
        "transformer optimiser before quantising.",
    )
    prune: PruneConfig = PruneConfig()
    distill: DistillConfig = DistillConfig()
    bench_length: Annotated[int, Field(ge=8, le=512)] = Field(
        default=64, description="Token length of the batch throughput measurement."
    )
    bench_batch_size: Annotated[int, Field(ge=1)] = Field(
        default=32, description="Batch size of the throughput measurement (the ranking key)."
    )
    bench_seconds: Annotated[float, Field(gt=0)] = Field(
        default=2.0, description="Minimum seconds each variant's throughput is measured for."
    )
    latency_runs: Annotated[int, Field(ge=1)] = Field(
        default=50, description="Batch-1 requests timed per variant (p50/p99)."
    )
    stage: Stage = Field(default="candidate", description="Stage of the registered variant.")


class AssistantSection(Section):
    """task: assistant — answer questions from an FAQ with the cited entry, or refuse."""

    threshold: Annotated[float, Field(ge=-1, le=1)] | None = Field(
        default=None,
        description="Answer only when the best entry's cosine similarity is at least this; "
        "default: tuned on the FAQ's own questions against real off-topic questions.",
    )
    top_k: Annotated[int, Field(ge=1, le=20)] = Field(
        default=3, description="Entries returned with each answer as sources."
    )


class GateConfig(Section):
    """The promotion gate of `lmforge retrain`: the challenger replaces the production version
    only when it is better on the held-out feedback slice and no worse on the original test
    split, both by these margins (percentage points of the metric)."""

    metric: Literal["accuracy", "macro_f1"] = Field(
        default="accuracy", description="The score both slices are compared on."
    )
    min_gain: Annotated[float, Field(ge=-100, le=100)] = Field(
        default=1.0,
        description="Points the challenger must gain over production on the feedback slice.",
    )
    max_test_drop: Annotated[float, Field(ge=0, le=100)] = Field(
        default=1.0,
        description="Points the challenger may lose against production on the original test split.",
    )
    min_eval_rows: Annotated[int, Field(ge=1)] = Field(
        default=30,
        description="Fewest held-out feedback rows the gate decides on (fewer: no promotion).",
    )
    max_p_value: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.05,
        description="The gain on the feedback slice must also be significant: a one-sided exact "
        "McNemar test (rows only one model gets right) at this level; 1 turns it off.",
    )


class FeedbackConfig(Section):
    """classification and recommendation: retraining on feedback (`lmforge retrain`, `lmforge
    loop`). Feedback rows are split by a seeded hash of their normalised text (a recommender's
    interactions: of their user and item), so a row keeps its place (held out, validation or
    training) in every round."""

    holdout_share: Annotated[float, Field(gt=0, lt=1)] = Field(
        default=0.2, description="Share of feedback rows held out to evaluate the gate on."
    )
    validation_share: Annotated[float, Field(ge=0, lt=1)] = Field(
        default=0.1,
        description="Share of feedback rows added to the validation split (early stopping).",
    )
    seed: int = Field(default=0, description="Seed of the hash that places each feedback row.")
    warm_start: Literal["production", "base"] = Field(
        default="production",
        description="Start from the production version's weights, or from the recipe's base.",
    )
    min_new_feedback: Annotated[int, Field(ge=1)] = Field(
        default=100,
        description="`lmforge loop`: labelled rows since the last round that start a new one.",
    )
    # A few hundred feedback rows are a few percent of a whole original epoch, too little to
    # move the model (docs/benchmarks.md, the closed loop): they are repeated, and trained on
    # beside a sample of the original rows (rehearsal) rather than the whole set.
    weight: Literal["auto"] | Annotated[float, Field(ge=1, le=100)] = Field(
        default="auto",
        description="Times each feedback training row is used per epoch (a fraction repeats a "
        "seeded share of them once more); auto: the value of weight_grid whose challenger scores "
        "best on the feedback validation rows without losing more than gate.max_test_drop on "
        "the original validation split.",
    )
    weight_grid: Annotated[
        list[Annotated[float, Field(ge=1, le=100)]], Field(min_length=1, max_length=5)
    ] = Field(
        default=[1.0, 4.0],
        description="The weights weight: auto tries, one challenger trained for each.",
    )
    replay: Annotated[int, Field(ge=1)] | None = Field(
        default=1000,
        description="Original training rows (a seeded sample) trained on beside the feedback; "
        "null: all of them.",
    )
    gate: GateConfig = GateConfig()


class MixedSource(SourceConfig):
    """One more text source mixed into a pretraining corpus, with its weight."""

    weight: Annotated[float, Field(gt=0, le=100)] = Field(
        default=1.0,
        description="How many times each of its training rows is used per epoch: 2 repeats "
        "every row twice, 0.5 keeps a seeded half (data.source has weight 1).",
    )


class PretrainSection(Section):
    """task: pretrain — self-supervised training on unlabelled text: masked-LM (encoders) or
    next-token prediction on packed sequences (decoders). The text is data.source's text
    column, plus any sources in mix."""

    objective: Literal["mlm", "clm"] = Field(
        default="mlm",
        description="mlm: masked-language modelling (an encoder base); clm: next-token "
        "prediction on packed sequences (a decoder base).",
    )
    mask_probability: Annotated[float, Field(gt=0, lt=1)] = Field(
        default=0.15,
        description="mlm: share of words (English) or characters (Chinese) chosen for "
        "prediction; of their tokens 80% become [MASK], 10% a random token, 10% stay.",
    )
    whole_word: bool = Field(
        default=True,
        description="mlm: mask every token of a chosen word together (a Chinese character is "
        "its own unit either way); false: each token on its own.",
    )
    mix: list[MixedSource] = Field(
        default_factory=list,
        description="More text sources (builtin or path, text_column, limit, weight) mixed "
        "into the corpus; cleaning and split as data's.",
    )
    language: Literal["en", "zh"] | None = Field(
        default=None,
        description="Keep only texts of this language, by script (zh: texts with Chinese "
        "characters; en: texts without); e.g. the Debian FAQ ships both.",
    )
    exclude_test_of: list[str] = Field(
        default_factory=list,
        description="Where a model trained from this one will be tested: built-in source "
        "names (their default split) or recipe files (.yaml, relative to this one; their own "
        "split, and a pair task's partner texts too). Their held-out (validation and test) "
        "texts are removed from the corpus: pretraining never sees a downstream test text.",
    )
    head_steps: Annotated[int, Field(ge=0)] = Field(
        default=200,
        description="mlm, for a base without a masked-LM head (e.g. minilm-l6): optimiser "
        "steps training a new head on the frozen encoder; that model is the 'before' of the "
        "comparison and the start of pretraining.",
    )
    eval_texts: Annotated[int, Field(ge=1)] = Field(
        default=200,
        description="Held-out texts scored for pseudo-perplexity (one pass per token: costly).",
    )


# Sections a task does not read: changing one is a mistake worth a message.
UNUSED_SECTIONS = {
    "assistant": (
        "adaptation",
        "training",
        "evaluation",
        "compress",
        "feedback",
        "pretrain",
        "multitask",
    ),
    "similarity": ("assistant", "compress", "feedback", "pretrain", "multitask"),
    "generation": ("assistant", "compress", "feedback", "pretrain", "multitask"),
    "classification": ("assistant", "pretrain", "multitask"),
    "pretrain": ("assistant", "compress", "evaluation", "feedback", "multitask"),
    # compress is refused by the task itself, with the reason (tasks/multitask.py)
    "multitask": ("assistant", "feedback", "pretrain"),
    "recommendation": (
        "adaptation",
        "training",
        "evaluation",
        "compress",
        "assistant",
        "pretrain",
        "multitask",
    ),
}
for _task in ("assistant", "similarity", "generation", "classification", "pretrain", "multitask"):
    UNUSED_SECTIONS[_task] += ("recommendation",)
# Keys inside sections a task reads that it does not read itself; refused when changed too.
UNUSED_KEYS = {
    "assistant": (
        "data.source.limit",
        "data.cleaning",
        "data.split",
        "registry.allow_below_baseline",
    ),
    "similarity": ("registry.allow_below_baseline", "training.class_weights"),
    "generation": ("registry.allow_below_baseline", "training.class_weights"),
    "classification": (),
    "recommendation": (
        "data.source.text_column",
        "data.source.label_column",
        "data.source.pair_column",
        "data.source.limit",
        "data.cleaning",
        "data.split",
        "registry.allow_below_baseline",
        # a recommender is refitted whole, on every usable interaction, and judged on HR@10
        "feedback.validation_share",
        "feedback.warm_start",
        "feedback.weight",
        "feedback.weight_grid",
        "feedback.replay",
        "feedback.gate.metric",
    ),
    "multitask": ("data.source.pair_column", "compress"),  # compress: refused by the task
    "pretrain": (
        "data.source.label_column",
        "data.source.pair_column",
        "registry.allow_below_baseline",
        "training.class_weights",
    ),
}


class Recipe(Section):
    """A whole lmforge job: data → model → training → evaluation → registry."""

    name: str = Field(description="Lower-case name of the job and of the registered model.")
    description: str = Field(default="", description="Free text, copied into the model card.")
    task: TaskName = Field(default="classification", description="What the model learns.")
    data: DataConfig
    model: ModelConfig = ModelConfig()
    adaptation: AdaptationConfig = AdaptationConfig()
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    registry: RegistryConfig = RegistryConfig()
    compress: CompressConfig = CompressConfig()
    assistant: AssistantSection = AssistantSection()
    feedback: FeedbackConfig = FeedbackConfig()
    pretrain: PretrainSection = PretrainSection()
    recommendation: RecommendationSection = RecommendationSection()
    multitask: MultitaskSection = MultitaskSection()

    def _changed(self, dotted: str) -> bool:
        """Whether the key ``dotted`` (``data.split``) differs from its default."""
        *parents, last = dotted.split(".")
        node: BaseModel = self
        for name in parents:
            node = getattr(node, name)
        default = type(node).model_fields[last].get_default(call_default_factory=True)
        return bool(getattr(node, last) != default)

    @model_validator(mode="after")
    def _check(self) -> Recipe:
        if not MODEL_NAME.match(self.name):
            raise ValueError(
                f"name {self.name!r} must be lower-case letters, digits, '.', '_' or '-' "
                "(at most 64, starting with a letter or digit)"
            )
        unused = [  # a dumped recipe repeats every default: only changed sections count
            k
            for k in UNUSED_SECTIONS[self.task]
            if getattr(self, k) != type(self).model_fields[k].get_default(call_default_factory=True)
        ]
        if unused:
            raise ValueError(
                f"section(s) {', '.join(unused)} do not apply to task {self.task}: remove them"
            )
        if self.task not in ("classification", "multitask") and self.registry.allow_below_baseline:
            raise ValueError(
                "registry.allow_below_baseline applies to task classification or multitask "
                "only (their majority-baseline gate): remove it"
            )
        if self.task != "classification" and self.training.class_weights != "none":
            raise ValueError(
                "training.class_weights applies to task classification only (it weighs a "
                "classifier's loss by label): remove it"
            )
        if self.task == "assistant":
            self._check_faq()
        elif self.task == "pretrain":
            self._check_unlabelled()
        elif self.task == "recommendation":
            if self.data.source.builtin != "movielens":
                raise ValueError("task recommendation reads data.source.builtin: movielens")
        elif self.task == "multitask":
            if not self.multitask.tasks:
                raise ValueError("task multitask needs multitask.tasks: at least one more sub-task")
        elif self.task != "classification" and self.data.source.pair_column is None:
            raise ValueError(
                f"task {self.task} needs data.source.pair_column (the column of each text's "
                "partner: the answer, or the response to learn)"
            )
        if self.registry.name is not None and not MODEL_NAME.match(self.registry.name):
            raise ValueError(f"registry.name {self.registry.name!r} is not a valid model name")
        # the keys above have messages of their own; the rest of the task's unused keys
        keys = [k for k in UNUSED_KEYS[self.task] if "." in k and self._changed(k)]
        if keys:
            raise ValueError(
                f"key(s) {', '.join(keys)} do not apply to task {self.task}: remove them"
            )
        return self

    def _check_unlabelled(self) -> None:
        sources = [self.data.source, *self.pretrain.mix]
        for i, source in enumerate(sources):
            where = "data.source" if i == 0 else f"pretrain.mix[{i - 1}]"
            for key in ("label_column", "pair_column"):
                if key in source.model_fields_set:
                    raise ValueError(
                        f"{where}.{key}: task pretrain learns from unlabelled text only; "
                        "remove it (train a classifier from the pretrained version afterwards)"
                    )

    def _check_faq(self) -> None:
        source = self.data.source
        if source.builtin not in (None, "debian_faq", "chatterbot_support"):
            raise ValueError(
                f"an assistant's FAQ cannot be {source.builtin}: use debian_faq, "
                "chatterbot_support or a file (data.source.path)"
            )
        if source.path is not None and source.pair_column is None:
            raise ValueError(
                "task assistant needs data.source.pair_column (the answer column; text_column "
                "is the question column)"
            )
        if (
            source.limit is not None
            or self.data.cleaning != CleaningConfig()
            or self.data.split != SplitConfig()
        ):
            raise ValueError(
                "data.source.limit, data.cleaning and data.split do not apply to task assistant "
                "(every FAQ entry is indexed as written): remove them"
            )

    @property
    def model_name(self) -> str:
        return self.registry.name or self.name
