"""Resume and early stopping for the tasks that share the loop with classification: contrastive
embeddings and instruction tuning, on tiny random models.

A run killed mid-way and resumed from its last checkpoint must end exactly where the unbroken run
ends (same steps, losses and weights); validation data must stop a run that no longer improves.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoTokenizer

from lmforge.errors import CheckpointError, RecipeError
from lmforge.recipe.schema import LoraConfig
from lmforge.train.contrastive import fit_embeddings
from lmforge.train.sft import chat_examples, fine_tune_decoder

pytestmark = pytest.mark.usefixtures("one_thread")

PAIRS = [(f"question {i}", f"the answer to question {i}") for i in range(8)]


class Killed(Exception):
    pass


class CrashAt:
    """A progress reporter that fails at one step, as a run killed there would stop."""

    def __init__(self, step: int) -> None:
        self.step, self.done = step, 0

    def start(self, description: str, total: int, completed: int = 0) -> None:
        self.done = completed

    def advance(self, steps: int = 1, **metrics: float) -> None:
        self.done += steps
        if self.done == self.step:
            raise Killed

    def note(self, message: str) -> None:
        pass

    def stop(self) -> None:
        pass


def _same_ending(resumed: Any, whole: Any) -> None:
    assert resumed.steps == whole.steps
    assert resumed.losses == pytest.approx(whole.losses, rel=1e-4)
    for a, b in zip(resumed.model.parameters(), whole.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def _last_step(run: Path) -> int:
    state = json.loads((run / "checkpoints" / "last" / "state.json").read_text())
    return int(state["step"])


# --- contrastive ------------------------------------------------------------------------------

FIT: dict[str, Any] = {
    "batch_size": 4,
    "learning_rate": 1e-3,
    "freeze_word_embeddings": False,
    "seed": 3,
}


def test_contrastive_run_resumes_where_its_checkpoint_left_off(
    tiny_base: Path, tmp_path: Path
) -> None:
    whole = fit_embeddings(tiny_base, PAIRS, epochs=4, **FIT)
    assert whole.steps == 8  # 2 batches of 4 pairs an epoch
    run = tmp_path / "run"
    with pytest.raises(Killed):  # killed in epoch 3, after epoch 2's checkpoint
        fit_embeddings(tiny_base, PAIRS, epochs=4, run_dir=run, progress=CrashAt(5), **FIT)
    assert _last_step(run) == 4
    resumed = fit_embeddings(tiny_base, PAIRS, epochs=4, run_dir=run, resume=True, **FIT)
    _same_ending(resumed, whole)
    with pytest.raises(CheckpointError, match="different recipe"):
        fit_embeddings(tiny_base, PAIRS, epochs=4, run_dir=run, resume=True, temperature=0.5)
    with pytest.raises(CheckpointError, match="no checkpoint to resume"):
        fit_embeddings(tiny_base, PAIRS, run_dir=tmp_path / "empty", resume=True)


def test_contrastive_validation_stops_when_retrieval_stops_improving(tiny_base: Path) -> None:
    # A learning rate of 0 cannot change the encoder: patience 1 stops after 2 evaluations.
    fit = fit_embeddings(
        tiny_base,
        PAIRS,
        epochs=10,
        batch_size=4,
        learning_rate=0.0,
        validation=PAIRS[:4],
        watch="mrr",
        patience=1,
    )
    assert fit.stopped_early and fit.steps == 4
    assert [h["step"] for h in fit.history] == [2.0, 4.0]
    assert {"val_loss", "val_mrr", "val_recall_at_1"} <= fit.best.keys()
    assert 0 < fit.best["val_mrr"] <= 1
    with pytest.raises(RecipeError, match="cannot stop early on 'accuracy'"):
        fit_embeddings(tiny_base, PAIRS, validation=PAIRS, watch="accuracy")


# --- instruction tuning -----------------------------------------------------------------------

CHATS = [(f"how are you {name}?", f"i loved every minute of it, {name}.") for name in "abcdefgh"]
SFT: dict[str, Any] = {
    "method": "lora",
    "lora": LoraConfig(r=4, alpha=8),
    "batch_size": 3,
    "learning_rate": 3e-3,
    "seed": 5,
}


def test_instruction_tuning_resumes_where_its_checkpoint_left_off(
    tiny_decoder_dir: Path, tmp_path: Path
) -> None:
    examples = chat_examples(AutoTokenizer.from_pretrained(tiny_decoder_dir), CHATS, 64)
    whole = fine_tune_decoder(tiny_decoder_dir, examples, epochs=3, **SFT)
    assert whole.steps == 9  # batches of 3, 3 and 2 an epoch
    run = tmp_path / "run"
    with pytest.raises(Killed):
        fine_tune_decoder(
            tiny_decoder_dir, examples, epochs=3, run_dir=run, progress=CrashAt(8), **SFT
        )
    assert _last_step(run) == 6
    resumed = fine_tune_decoder(
        tiny_decoder_dir, examples, epochs=3, run_dir=run, resume=True, **SFT
    )
    _same_ending(resumed, whole)
    assert not any("lora" in name for name, _ in resumed.model.named_parameters())  # merged
    with pytest.raises(CheckpointError, match="different recipe"):
        fine_tune_decoder(
            tiny_decoder_dir, examples, epochs=3, run_dir=run, resume=True, **{**SFT, "seed": 6}
        )


def test_instruction_tuning_validation_stops_and_keeps_the_best(tiny_decoder_dir: Path) -> None:
    examples = chat_examples(AutoTokenizer.from_pretrained(tiny_decoder_dir), CHATS, 64)
    frozen = fine_tune_decoder(
        tiny_decoder_dir,
        examples[:6],
        epochs=10,
        validation=examples[6:],
        patience=1,
        **{**SFT, "learning_rate": 0.0},
    )
    assert frozen.stopped_early and frozen.steps == 4 and len(frozen.history) == 2
    assert frozen.best == frozen.history[0]
    assert {"val_loss", "val_perplexity"} <= frozen.best.keys()
