"""The training loop under torchrun: two CPU processes (gloo) train one model together."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from conftest import toy_recipe

SCRIPT = """
import json, sys
from pathlib import Path
import torch.distributed as dist
from lmforge.data import prepare_data
from lmforge.registry.refs import resolve_base
from lmforge.recipe import load_recipe
from lmforge.train.loop import fine_tune

recipe = load_recipe(sys.argv[1])
data = prepare_data(recipe.data)
base = resolve_base(recipe.model.base, "encoder", Path(sys.argv[2]))
outcome = fine_tune(recipe, data, base, Path(sys.argv[2]) / "run")
rank = dist.get_rank()
first = next(outcome.model.parameters()).detach().flatten()[:8].tolist()
Path(sys.argv[2], f"rank{rank}.json").write_text(json.dumps(
    {"world": dist.get_world_size(), "steps": outcome.steps, "samples": outcome.train_samples,
     "weights": first}))
"""


def test_torchrun_two_processes_train_in_step(
    toy_csv: Path, tiny_base: Path, tmp_path: Path
) -> None:
    recipe = toy_recipe(toy_csv, tiny_base, epochs=2, early_stopping={"enabled": False})
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    ranks = torchrun(SCRIPT, 29533, recipe_path, tmp_path)
    assert all(r["world"] == 2 for r in ranks)
    # 48 training rows in batches of 8 = 6 batches an epoch, split over 2 processes: 3 steps.
    assert [r["steps"] for r in ranks] == [6, 6]
    assert ranks[0]["samples"] + ranks[1]["samples"] == 2 * 48
    # DDP keeps the replicas identical: both processes end with the same weights.
    assert ranks[0]["weights"] == ranks[1]["weights"]


EMBED_SCRIPT = """
import json, sys
from pathlib import Path
import torch.distributed as dist
from lmforge.train.contrastive import fit_embeddings

pairs = [(f"question {i}", f"answer number {i}") for i in range(16)]
fit = fit_embeddings(Path(sys.argv[1]), pairs, epochs=2, batch_size=4, learning_rate=1e-3,
                     freeze_word_embeddings=False)
rank = dist.get_rank()
first = next(p for p in fit.model.parameters() if p.requires_grad).detach().flatten()[:8]
Path(sys.argv[2], f"rank{rank}.json").write_text(json.dumps(
    {"steps": fit.steps, "weights": first.tolist()}))
"""


def test_torchrun_trains_contrastive_embeddings_in_step(tiny_base: Path, tmp_path: Path) -> None:
    """A task whose loss runs the model twice a step (queries, then passages) under DDP."""
    ranks = torchrun(EMBED_SCRIPT, 29534, tiny_base, tmp_path)
    # 16 pairs in batches of 4 = 4 batches an epoch, split over 2 processes: 2 steps an epoch.
    assert [r["steps"] for r in ranks] == [4, 4]
    assert ranks[0]["weights"] == ranks[1]["weights"]


def torchrun(script: str, port: int, argument: Path, out: Path) -> list[dict[str, Any]]:
    """Run ``script`` in 2 processes under torchrun (argv: ``argument``, ``out``); what each
    rank wrote to ``out/rank{N}.json``."""
    path = out / "script.py"
    path.write_text(script)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    command += [f"--master_port={port}", str(path), str(argument), str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
