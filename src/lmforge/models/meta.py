"""The typed metadata of a model folder: its ``lmforge.json``, written and read only here.

Every model folder lmforge writes (a run's model, a registered version, a compressed variant,
an assistant) carries ``lmforge.json`` saying which task the folder serves and what the runtime
needs to serve it (labels, text prefix, maximum length, cleaning, the registered backend). One
pydantic model per task, discriminated by ``task``; keys this version does not know are kept
(a newer lmforge may have written them) and written back unchanged.

Reading distinguishes the two failures a caller must answer differently: no ``lmforge.json``
means the folder is not an lmforge model (:class:`ModelNotFoundError`); one that cannot be
parsed, fails validation or names a task this lmforge does not serve means the model exists
but cannot be used (:class:`ModelUnavailableError`, answered 503 by the server).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    TypeAdapter,
    ValidationError,
)

from lmforge.errors import LmforgeError, ModelNotFoundError, ModelUnavailableError
from lmforge.recipe.schema import CleaningConfig

META_FILE = "lmforge.json"


def _distinct(labels: list[str]) -> list[str]:
    # Duplicate labels would merge two of the head's outputs into one key of the scores.
    if len(set(labels)) != len(labels):
        raise ValueError("labels must be distinct")
    return labels


#: A classifier's labels, in the order of its head's outputs: two or more, distinct, non-empty.
Labels = Annotated[
    list[Annotated[StrictStr, Field(min_length=1)]],
    Field(min_length=2),
    AfterValidator(_distinct),
]
#: Tokens a text is cut to: positive (the runtime checks it against the model's positions).
MaxLength = Annotated[int, Field(ge=1, le=1 << 20)]


class _Meta(BaseModel):
    # Unknown keys are kept, not rejected: the file may come from a newer lmforge, and a
    # compressed variant rewrites its parent's file without dropping what it does not know.
    model_config = ConfigDict(extra="allow", frozen=True)

    #: What serves a folder of this task — quoted when it is handed to the wrong runtime.
    served_by: ClassVar[str]

    task: str
    labels: list[str] = []
    base_model: str = ""


class RuntimeMeta(BaseModel):
    """The backend a version was registered for (compressed versions name theirs)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    backend: str


class CompressionMeta(BaseModel):
    """Which variant of which parent version a compressed version is."""

    model_config = ConfigDict(extra="allow", frozen=True)
    variant: str
    parent: str


class ClassificationMeta(_Meta):
    """A text classifier: a fine-tuned run's model, or one of its compressed variants."""

    served_by: ClassVar[str] = "lmforge.Predictor, `lmforge predict` and POST /v1/predict"

    task: Literal["classification"]
    labels: Labels
    text_prefix: str = ""
    max_length: MaxLength
    cleaning: CleaningConfig = CleaningConfig()
    precision: str | None = None  # the training precision (absent in hand-made folders)
    structure: dict[str, Any] | None = None  # a pruned or distilled variant's own report
    runtime: RuntimeMeta | None = None
    compression: CompressionMeta | None = None

    @property
    def backend(self) -> str:
        """The backend the version was registered for: its compressed variant's, else torch."""
        return self.runtime.backend if self.runtime is not None else "torch-fp32"


class SimilarityMeta(_Meta):
    """A sentence-embedding encoder fine-tuned on pairs."""

    served_by: ClassVar[str] = "lmforge.runtime.embedder.Embedder and POST /v1/embed"

    task: Literal["similarity"]
    text_prefix: str = ""
    passage_prefix: str | None = None  # absent: passages take the query prefix
    max_length: MaxLength
    cleaning: CleaningConfig = CleaningConfig()

    @property
    def passage(self) -> str:
        return self.text_prefix if self.passage_prefix is None else self.passage_prefix


class GenerationMeta(_Meta):
    """An instruction-tuned decoder."""

    served_by: ClassVar[str] = "`lmforge generate` and POST /v1/chat/completions (--decoder)"

    task: Literal["generation"]
    max_length: MaxLength


class AssistantMeta(_Meta):
    """An FAQ assistant (its settings live in assistant.json beside this file)."""

    served_by: ClassVar[str] = "`lmforge app assistant` and POST /v1/assistant/ask (--assistant)"

    task: Literal["assistant"]


class PretrainMeta(_Meta):
    """A self-supervised pretrained model: an encoder with its masked-LM head (objective mlm)
    or a decoder (clm). Not served itself: it is a base for later recipes (``model.base``)."""

    served_by: ClassVar[str] = "no runtime: use it as model.base of a classification, "
    "similarity or generation recipe"

    task: Literal["pretrain"]
    objective: Literal["mlm", "clm"]
    text_prefix: str = ""
    max_length: MaxLength

    @property
    def kind(self) -> Literal["encoder", "decoder"]:
        """What the folder is as a base model."""
        return "encoder" if self.objective == "mlm" else "decoder"


class RecommendationMeta(_Meta):
    """A fitted recommender (its arrays in recommender.npz, items in recommender.json)."""

    served_by: ClassVar[str] = "`lmforge app recommend` and POST /v1/recommend"

    task: Literal["recommendation"]
    method: Literal["popularity", "itemknn", "als", "bpr", "text", "hybrid"]
    items: Annotated[int, Field(ge=1)]
    users: Annotated[int, Field(ge=0)]


class HeadMeta(BaseModel):
    """One sub-task of a multi-task model: its name and its head's labels, in output order."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: Annotated[StrictStr, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
    labels: Labels


def _distinct_heads(heads: list[HeadMeta]) -> list[HeadMeta]:
    if len({h.name for h in heads}) != len(heads):
        raise ValueError("sub-task names must be distinct")
    return heads


class MultitaskMeta(_Meta):
    """One shared encoder (mean-pooled) with a classification head per sub-task; the heads'
    weights are in ``heads.safetensors`` beside the encoder's. Served by torch only: the ONNX
    export and the compress stage carry one classifier head."""

    served_by: ClassVar[str] = (
        "lmforge.runtime.multitask.MultitaskPredictor and POST /v1/predict with task or tasks"
    )

    task: Literal["multitask"]
    tasks: Annotated[list[HeadMeta], Field(min_length=1), AfterValidator(_distinct_heads)]
    text_prefix: str = ""
    max_length: MaxLength
    cleaning: CleaningConfig = CleaningConfig()
    precision: str | None = None

    @property
    def task_names(self) -> list[str]:
        return [h.name for h in self.tasks]

    def head(self, name: str) -> HeadMeta:
        """The sub-task called ``name`` (KeyError when there is none)."""
        for h in self.tasks:
            if h.name == name:
                return h
        raise KeyError(name)


ModelMeta = Annotated[
    ClassificationMeta
    | SimilarityMeta
    | GenerationMeta
    | AssistantMeta
    | PretrainMeta
    | RecommendationMeta
    | MultitaskMeta,
    Field(discriminator="task"),
]
_ADAPTER: TypeAdapter[ModelMeta] = TypeAdapter(ModelMeta)
TASKS = (
    "classification",
    "similarity",
    "generation",
    "assistant",
    "pretrain",
    "recommendation",
    "multitask",
)


def parse_model_meta(data: Any, where: str = META_FILE) -> ModelMeta:
    """Validate a decoded ``lmforge.json``; a one-line ModelUnavailableError when it is not one
    this lmforge can serve."""
    task = data.get("task") if isinstance(data, dict) else None
    if isinstance(task, str) and task not in TASKS:
        raise ModelUnavailableError(
            f"{where} is for task '{task}', which this lmforge does not serve",
            f"use a version of one of: {', '.join(TASKS)}",
        )
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        at = ".".join(str(p) for p in first["loc"]) or "the top level"
        raise ModelUnavailableError(
            f"{where} is damaged ({at}: {first['msg']})",
            "re-register the version or use another one",
        ) from exc


def read_model_meta(folder: Path) -> ModelMeta:
    """The metadata of a model folder."""
    path = folder / META_FILE
    if not path.is_file():
        raise ModelNotFoundError(
            f"{folder} is not an lmforge model folder (no {META_FILE})",
            "give a registered NAME[:VERSION]",
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: bad JSON or bad UTF-8
        raise ModelUnavailableError(
            f"{path} is damaged ({type(exc).__name__}: {exc})",
            "re-register the version or use another one",
        ) from exc
    return parse_model_meta(data, str(path))


def write_model_meta(folder: Path, meta: ModelMeta) -> Path:
    """Write ``folder/lmforge.json``: the keys set, in declaration order, then unknown ones kept
    from a parent's file; optional keys left empty are not written (the format of every
    lmforge.json written so far)."""
    path = folder / META_FILE
    path.write_text(json.dumps(meta.model_dump(mode="json", exclude_none=True), indent=1))
    return path


def derived_meta(meta: ModelMeta, **updates: Any) -> ModelMeta:
    """The metadata of a folder derived from ``meta``'s (a compressed variant): no registered
    backend — the variant registers its own — plus ``updates``."""
    data = meta.model_dump(mode="json", exclude_none=True)
    data.pop("runtime", None)
    data.update(updates)
    return parse_model_meta(data)


def require_classifier(meta: ModelMeta, folder: Path) -> ClassificationMeta:
    """``meta`` if the folder holds a classifier; else a one-line error naming what the folder
    holds and what serves it."""
    if isinstance(meta, ClassificationMeta):
        return meta
    raise LmforgeError(
        f"{folder} holds a {meta.task} model, not a classifier",
        f"serve it with {meta.served_by}",
    )
