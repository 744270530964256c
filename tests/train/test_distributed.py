"""The training loop under torchrun: two CPU processes (gloo) train one model together."""

from __future__ import annotations

import json
import os
import shutil
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


MULTITASK_SCRIPT = """
import json, sys
from pathlib import Path
import torch.distributed as dist
from lmforge.data import prepare_data
from lmforge.recipe import load_recipe
from lmforge.registry.refs import resolve_base
from lmforge.tasks.multitask import subtask_data
from lmforge.train.multitask import SubTask, train_multitask

recipe = load_recipe(sys.argv[1])
subtasks = []
for name, (cfg, weight) in subtask_data(recipe).items():
    d = prepare_data(cfg)
    subtasks.append(SubTask(name, d.labels, d.train["text"].tolist(), d.label_ids("train"),
                            d.validation["text"].tolist(), d.label_ids("validation"), weight))
base = resolve_base(recipe.model.base, "encoder", Path(sys.argv[2]))
outcome, _ = train_multitask(recipe, subtasks, base, Path(sys.argv[2]) / "run")
rank = dist.get_rank() if dist.is_initialized() else 0
world = dist.get_world_size() if dist.is_initialized() else 1
first = next(outcome.model.parameters()).detach().flatten()[:8].tolist()
Path(sys.argv[2], f"rank{rank}.json").write_text(json.dumps(
    {"world": world, "steps": outcome.result.steps,
     "val_loss": outcome.result.history[-1]["val_loss"],
     "weights": first}))
"""

PRETRAIN_SCRIPT = """
import json, sys
from pathlib import Path
import torch.distributed as dist
from transformers import AutoTokenizer
from lmforge.train.loop import Schedule
from lmforge.train.masking import MaskingRule, encode_mlm
from lmforge.train.pretrain import fine_tune_mlm, load_mlm, masked_scores

base, accumulation = Path(sys.argv[1]), int(Path(sys.argv[2], "accumulation").read_text())
tokenizer = AutoTokenizer.from_pretrained(base)
texts = [f"{a} film number {i}" for i in range(24) for a in ("a wonderful", "a dull", "an odd")]
rows = encode_mlm(tokenizer, texts, 32, whole_word=True)
held = encode_mlm(tokenizer, [f"a wonderful film number {i}" for i in range(30, 40)], 32,
                  whole_word=True)
rule = MaskingRule.of(tokenizer, 0.15)
model, _ = load_mlm(base)
schedule = Schedule(epochs=3, learning_rate=3e-3, gradient_accumulation=accumulation)
outcome = fine_tune_mlm(model, rows, rule, schedule, batch_size=8, seed=0)
rank = dist.get_rank() if dist.is_initialized() else 0
loss = masked_scores(outcome.model, held, rule)["loss"]
Path(sys.argv[2], f"rank{rank}.json").write_text(json.dumps(
    {"steps": outcome.steps, "val_loss": loss}))
"""

# Two processes with batch B each against one with batch B and two accumulated micro-batches:
# the same rows make each optimiser step (the loop deals micro-batch k to process k mod 2), so
# the curves agree up to float summation order and dropout/masking draws (the bound:
# final loss within 2 %).
LOSS_TOLERANCE = 0.02


def no_dropout_base(tiny_base: Path, folder: Path) -> Path:
    """tiny_base with dropout off: the two runs then differ only where the draws must."""
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(tiny_base)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    AutoModel.from_pretrained(tiny_base, config=config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (tiny_base / name).is_file():
            shutil.copy2(tiny_base / name, folder / name)
    return folder


def one_process(script: str, argument: Path, out: Path) -> dict[str, Any]:
    path = out / "script.py"
    path.write_text(script)
    result = subprocess.run(
        [sys.executable, str(path), str(argument), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(json.loads((out / "rank0.json").read_text()))


def test_torchrun_multitask_matches_one_process(
    toy_csv: Path, tiny_base: Path, tmp_path: Path
) -> None:
    base = no_dropout_base(tiny_base, tmp_path / "base")
    topics = tmp_path / "topics.csv"
    words = {"sport": "the team scored a goal", "food": "bake bread with basil", "weather": "rain"}
    # 72 rows → 43 train, 6 batches of 8, as the reviews' 48: an even count per epoch, so the
    # accumulating process carries no odd micro-batch into the next epoch
    rows = [f"{t} ({i}),{label}" for label, t in words.items() for i in range(24)]
    topics.write_text("sentence,topic\n" + "\n".join(rows) + "\n")
    runs = {}
    for world, accumulation in ((2, 1), (1, 2)):
        out = tmp_path / f"world{world}"
        out.mkdir()
        recipe = toy_recipe(
            toy_csv, base, epochs=3, learning_rate=5e-3, gradient_accumulation=accumulation
        )
        recipe.update(task="multitask", name="tiny-multi")
        recipe["training"]["early_stopping"] = {"enabled": False}
        recipe["multitask"] = {
            "name": "sentiment",
            "sampling": "round_robin",
            "tasks": [
                {
                    "name": "topic",
                    "path": str(topics),
                    "text_column": "sentence",
                    "label_column": "topic",
                }
            ],
        }
        path = out / "recipe.yaml"
        path.write_text(yaml.safe_dump(recipe))
        if world == 2:
            ranks = torchrun(MULTITASK_SCRIPT, 29535, path, out)
            assert [r["world"] for r in ranks] == [2, 2]
            assert ranks[0]["weights"] == ranks[1]["weights"]  # DDP: one model
            runs[world] = ranks[0]
        else:
            runs[world] = one_process(MULTITASK_SCRIPT, path, out)
    assert runs[2]["steps"] == runs[1]["steps"]
    two, one = runs[2]["val_loss"], runs[1]["val_loss"]
    assert abs(two - one) <= LOSS_TOLERANCE * one, (two, one)


def test_torchrun_pretraining_matches_one_process(tiny_base: Path, tmp_path: Path) -> None:
    from lmforge.train.pretrain import load_mlm

    base = no_dropout_base(tiny_base, tmp_path / "base")
    model, _ = load_mlm(base)  # a masked-LM head, saved so that both runs start from it
    model.save_pretrained(base)
    runs = {}
    for world, accumulation in ((2, 1), (1, 2)):
        out = tmp_path / f"world{world}"
        out.mkdir()
        (out / "accumulation").write_text(str(accumulation))
        if world == 2:
            ranks = torchrun(PRETRAIN_SCRIPT, 29536, base, out)
            runs[world] = ranks[0]
        else:
            runs[world] = one_process(PRETRAIN_SCRIPT, base, out)
    assert runs[2]["steps"] == runs[1]["steps"]
    two, one = runs[2]["val_loss"], runs[1]["val_loss"]
    assert abs(two - one) <= LOSS_TOLERANCE * one, (two, one)


def test_lmforge_run_under_torchrun_registers_one_version(
    toy_csv: Path, tiny_base: Path, tmp_path: Path
) -> None:
    """`torchrun -m lmforge.cli run`: both processes train into one run folder, the main one
    registers the version once."""
    recipe = toy_recipe(toy_csv, tiny_base, epochs=2, early_stopping={"enabled": False})
    recipe["registry"] = {"allow_below_baseline": True}  # the gate is not what is tested here
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    home = tmp_path / "home"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    command += ["--master_port=29537", "-m", "lmforge.cli", "run", str(path), "--json"]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "LMFORGE_HOME": str(home)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    from lmforge.registry import Registry
    from lmforge.settings import Settings

    versions = Registry(Settings(home=home, database_url=None)).list("toy")
    assert [v.version for v in versions] == [1]
    assert len(list((home / "runs").iterdir())) == 1  # one run folder for both processes
