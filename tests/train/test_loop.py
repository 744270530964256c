from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from conftest import toy_recipe
from lmforge.data import prepare_data
from lmforge.errors import CheckpointError
from lmforge.recipe import parse_recipe
from lmforge.registry.refs import resolve_base
from lmforge.settings import Settings
from lmforge.train.batching import epoch_batches, shuffled_batches
from lmforge.train.loop import Schedule, Validation, fine_tune, train


def _train(recipe_dict: dict[str, object], run_dir: Path, settings: Settings, **kw: bool):  # type: ignore[no-untyped-def]
    recipe = parse_recipe(recipe_dict)
    data = prepare_data(recipe.data)
    base = resolve_base(recipe.model.base, "encoder", settings.cache_dir)
    return fine_tune(recipe, data, base, run_dir, **kw)


def test_epoch_batches_cover_every_row_once_and_are_seeded() -> None:
    lengths = np.random.default_rng(0).integers(1, 60, size=203)
    batches = epoch_batches(lengths, 16, seed=1, epoch=0)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(203))
    assert all(len(b) <= 16 for b in batches)
    assert batches == epoch_batches(lengths, 16, seed=1, epoch=0)
    assert batches != epoch_batches(lengths, 16, seed=1, epoch=1)


def test_full_fine_tune_learns_the_toy_task(
    toy_csv: Path, tiny_base: Path, home: Settings, tmp_path: Path
) -> None:
    recipe = toy_recipe(toy_csv, tiny_base, epochs=6, early_stopping={"enabled": False})
    outcome = _train(recipe, tmp_path / "run", home)
    assert outcome.best["val_accuracy"] >= 0.8
    assert outcome.history[-1]["train_loss"] < outcome.history[0]["train_loss"]
    assert outcome.trainable_parameters == outcome.total_parameters
    assert (tmp_path / "run" / "checkpoints" / "last" / "model.safetensors").is_file()
    assert list((tmp_path / "run" / "tensorboard").iterdir())


def test_lora_trains_adapters_only_and_merges(
    toy_csv: Path, tiny_base: Path, home: Settings, tmp_path: Path
) -> None:
    recipe = toy_recipe(toy_csv, tiny_base, epochs=1)
    recipe["adaptation"] = {"method": "lora", "lora": {"r": 4}, "freeze_embeddings": True}
    outcome = _train(recipe, tmp_path / "run", home)
    assert 0 < outcome.trainable_parameters < outcome.total_parameters / 4
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
    assert type(outcome.model).__name__ == "BertForSequenceClassification"  # merged, plain HF
    assert not any("lora" in name for name, _ in outcome.model.named_parameters())


def test_early_stopping_stops_before_the_last_epoch(
    toy_csv: Path, tiny_base: Path, home: Settings, tmp_path: Path
) -> None:
    # A learning rate of ~0 cannot improve validation, so patience 1 stops after 2 evaluations.
    recipe = toy_recipe(
        toy_csv,
        tiny_base,
        epochs=10,
        learning_rate=1e-12,
        warmup_ratio=0.0,
        early_stopping={"metric": "loss", "patience": 1},
    )
    outcome = _train(recipe, tmp_path / "run", home)
    assert outcome.stopped_early
    assert len(outcome.history) == 2


def test_resume_continues_from_the_checkpoint(
    toy_csv: Path, tiny_base: Path, home: Settings, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    no_stop = {"enabled": False}
    first = _train(
        toy_recipe(toy_csv, tiny_base, max_steps=4, eval_every_steps=2, early_stopping=no_stop),
        run,
        home,
    )
    assert first.steps == 4
    resumed = _train(
        toy_recipe(toy_csv, tiny_base, max_steps=8, eval_every_steps=2, early_stopping=no_stop),
        run,
        home,
        resume=True,
    )
    assert resumed.steps == 8
    assert [h["step"] for h in resumed.history] == [2.0, 4.0, 6.0, 8.0]
    assert resumed.history[:2] == first.history
    assert resumed.train_samples < first.train_samples * 2  # only the new steps ran


def test_resume_without_checkpoint_is_a_clear_error(
    toy_csv: Path, tiny_base: Path, home: Settings, tmp_path: Path
) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint to resume"):
        _train(toy_recipe(toy_csv, tiny_base), tmp_path / "empty", home, resume=True)


def test_resume_from_a_corrupt_checkpoint_is_a_clear_error(
    toy_csv: Path, tiny_base: Path, home: Settings, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    _train(toy_recipe(toy_csv, tiny_base, max_steps=2, eval_every_steps=2), run, home)
    weights = run / "checkpoints" / "last" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt or incomplete"):
        _train(toy_recipe(toy_csv, tiny_base, max_steps=4), run, home, resume=True)
    state = run / "checkpoints" / "last" / "state.json"
    state.write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        _train(toy_recipe(toy_csv, tiny_base, max_steps=4), run, home, resume=True)


def test_resume_with_another_recipe_is_refused(
    toy_csv: Path, tiny_base: Path, home: Settings, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    _train(toy_recipe(toy_csv, tiny_base, max_steps=2, eval_every_steps=2), run, home)
    state = json.loads((run / "checkpoints" / "last" / "state.json").read_text())
    assert state["step"] == 2
    with pytest.raises(CheckpointError, match="different recipe"):
        _train(toy_recipe(toy_csv, tiny_base, learning_rate=0.5), run, home, resume=True)


def test_runs_with_different_precisions_in_one_process(
    toy_csv: Path, tiny_base: Path, home: Settings, tmp_path: Path
) -> None:
    # fp32 by name: "auto" (the recipe's default) is bf16 on CPUs with native bf16
    fp32 = _train(
        toy_recipe(toy_csv, tiny_base, max_steps=2, precision="fp32"), tmp_path / "a", home
    )
    bf16 = _train(
        toy_recipe(toy_csv, tiny_base, max_steps=2, precision="bf16", gradient_accumulation=2),
        tmp_path / "b",
        home,
    )
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    assert bf16.steps == 2


# --- the loop itself, on a toy regression ------------------------------------------------------


def _toy_problem() -> tuple[torch.nn.Linear, Any, Any, Any]:
    torch.manual_seed(0)
    x = torch.randn(32, 3)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    model = torch.nn.Linear(3, 1)

    def rows(idx: list[int]) -> dict[str, torch.Tensor]:
        return {"x": x[idx], "y": y[idx]}

    def loss(m: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return ((m(batch["x"]) - batch["y"]) ** 2).mean()

    return model, (lambda epoch: shuffled_batches(32, 8, 0, epoch)), rows, loss


@pytest.mark.parametrize("with_run_dir", [True, False])
@pytest.mark.parametrize("higher_is_better", [False, True])
def test_the_best_validated_weights_come_back_and_patience_stops(
    tmp_path: Path, with_run_dir: bool, higher_is_better: bool
) -> None:
    """Any metric, either direction: the weights of the best evaluation are returned (from the
    best checkpoint, or kept in memory without a run folder), and patience counts from it."""
    model, batches, rows, loss = _toy_problem()
    scripted = [1.0, 0.5, 0.7, 0.9, 0.2]  # lower is better: the 2nd is best, then 2 worse
    if higher_is_better:
        scripted = [-s for s in scripted]
    seen: list[dict[str, torch.Tensor]] = []

    def metrics(m: Any) -> dict[str, float]:
        seen.append({k: v.detach().clone() for k, v in m.state_dict().items()})
        return {"score": scripted[len(seen) - 1]}

    result = train(
        model,
        batches,
        rows,
        loss,
        Schedule(epochs=10, learning_rate=0.05),
        validation=Validation(
            metrics, watch="score", higher_is_better=higher_is_better, patience=2
        ),
        run_dir=tmp_path / "run" if with_run_dir else None,
    )
    assert result.stopped_early and len(result.history) == 4 and result.steps == 16
    assert result.best == result.history[1] and result.best["val_score"] == scripted[1]
    for key, value in result.model.state_dict().items():
        assert torch.equal(value, seen[1][key])
    assert not torch.equal(seen[1]["weight"], seen[3]["weight"])  # it did train on
    assert (tmp_path / "run" / "checkpoints" / "best").is_dir() == with_run_dir
    assert len(result.losses) == 16 and result.losses[-1] < result.losses[0]


def test_shuffled_batches_are_the_permutations_of_one_seeded_generator() -> None:
    """The order contrastive and instruction tuning drew before they shared the loop: one
    generator, one permutation per epoch. Any epoch can be rebuilt alone (for resume)."""
    rng = np.random.default_rng(3)
    for epoch in range(4):
        order = rng.permutation(10).tolist()
        assert shuffled_batches(10, 4, 3, epoch) == [order[:4], order[4:8], order[8:]]
        assert shuffled_batches(10, 4, 3, epoch, drop_last=True) == [order[:4], order[4:8]]
    assert shuffled_batches(3, 4, 3, 0, drop_last=True) == [
        np.random.default_rng(3).permutation(3).tolist()
    ]
