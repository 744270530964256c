"""Checkpoints of the training loop: atomic on disk, refused when damaged or from another run.

A run folder's ``checkpoints/`` holds ``best`` (the weights of the best validation so far) and
``last`` (weights, optimiser, scheduler, RNG and the loop's own state, enough to resume). Each is
written to a sibling folder and swapped in, so a crash leaves the previous one whole.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lmforge.errors import CheckpointError, first_line
from lmforge.recipe.schema import Recipe


def fingerprint_of(settings: dict[str, Any]) -> str:
    """A short hash of what must match for a checkpoint to be resumable."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def recipe_fingerprint(recipe: Recipe) -> str:
    """What must match for a checkpoint to be resumable: everything but the run's length."""
    data = recipe.model_dump(mode="json")
    for key in ("epochs", "max_steps", "eval_every_steps", "early_stopping", "num_threads"):
        data["training"].pop(key, None)
    data.pop("evaluation", None)
    data.pop("registry", None)
    data.pop("description", None)
    return fingerprint_of(data)


def read_checkpoint_state(ckpt_dir: Path, recipe: Recipe) -> dict[str, Any]:
    """The loop state of a run folder's last checkpoint, refused if another recipe made it."""
    return read_state(ckpt_dir, recipe_fingerprint(recipe))


def save_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    optimizer: Any = None,
    scheduler: Any = None,
    state: dict[str, Any] | None = None,
) -> None:
    """Weights (and, for a resumable checkpoint, optimiser, scheduler, RNG and loop state),
    written to a sibling folder and swapped in: a crash leaves the previous one intact."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # Cloned one by one: tied weights (a decoder's embeddings and output layer) share storage,
    # which safetensors refuses to write.
    weights = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(weights, tmp / "model.safetensors")
    if optimizer is not None and scheduler is not None:
        trainer = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": torch.get_rng_state(),
        }
        torch.save(trainer, tmp / "trainer.pt")
    if state is not None:
        (tmp / "state.json").write_text(json.dumps(state, indent=1))
    _swap_in(tmp, folder)


def _swap_in(tmp: Path, folder: Path) -> None:
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def read_state(ckpt_dir: Path, fingerprint: str) -> dict[str, Any]:
    """The loop state of ``ckpt_dir/last``, checked to come from a run with ``fingerprint``."""
    last = ckpt_dir / "last"
    if not last.is_dir() and (ckpt_dir / "last.old").is_dir():
        last.parent.joinpath("last.old").rename(last)  # a crash mid-swap: the old one is whole
    if not (last / "state.json").is_file():
        raise CheckpointError(
            f"no checkpoint to resume in {ckpt_dir.parent}",
            "give the run folder printed by an earlier `lmforge train`, or drop --resume",
        )
    try:
        state: dict[str, Any] = json.loads((last / "state.json").read_text())
        step = int(state["step"])
        state["history"], state["best"], state["bad_evals"] = (
            list(state["history"]),
            dict(state["best"]),
            int(state["bad_evals"]),
        )
        state["losses"] = [float(x) for x in state.get("losses", [])]
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"checkpoint {last} is corrupt (state.json unreadable)",
            "delete the run folder and train again without --resume",
        ) from exc
    if state.get("fingerprint") != fingerprint:
        raise CheckpointError(
            f"checkpoint {last} was made with a different recipe",
            "resume with the recipe that started the run, or train without --resume",
        )
    state["step"] = step
    return state


def load_weights(folder: Path, model: torch.nn.Module) -> None:
    """The weights of a checkpoint folder into ``model`` (the best ones, after training)."""
    model.load_state_dict(load_file(folder / "model.safetensors"))


def load_checkpoint(folder: Path, model: torch.nn.Module, optimizer: Any, scheduler: Any) -> None:
    """Everything ``save_checkpoint`` wrote for a resumable checkpoint, back into place."""
    try:
        load_weights(folder, model)
        # Our own file, and weights_only refuses anything but tensors and plain containers.
        bundle = torch.load(folder / "trainer.pt", weights_only=True)
        optimizer.load_state_dict(bundle["optimizer"])
        scheduler.load_state_dict(bundle["scheduler"])
        torch.set_rng_state(bundle["rng"])
    except Exception as exc:  # whatever fails to read back, the checkpoint is unusable
        raise CheckpointError(
            f"checkpoint {folder} is corrupt or incomplete ({first_line(exc, 160)})",
            "delete the run folder and train again without --resume",
        ) from exc
