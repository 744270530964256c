"""The multi-task batching rule: which sub-task each batch comes from, by rule, deterministic in
(seed, epoch), every batch of one sub-task; and the multi-task metadata's round trip."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from lmforge.errors import ModelUnavailableError
from lmforge.models.meta import HeadMeta, MultitaskMeta, read_model_meta, write_model_meta
from lmforge.train.multitask import MultitaskBatches, sampling_probabilities, task_order


def test_sampling_probabilities_by_rule() -> None:
    sizes = [900, 100]
    assert sampling_probabilities(sizes, "proportional", 2.0) == pytest.approx([0.9, 0.1])
    # rows^(1/2): 30 : 10 — the small sub-task drawn more often than its share
    assert sampling_probabilities(sizes, "temperature", 2.0) == pytest.approx([0.75, 0.25])
    assert sampling_probabilities(sizes, "temperature", 1.0) == pytest.approx([0.9, 0.1])
    assert sampling_probabilities(sizes, "round_robin", 2.0) == pytest.approx([0.5, 0.5])


def test_task_order_follows_the_rule_and_repeats_per_epoch() -> None:
    assert task_order([5, 5, 5], "round_robin", 2.0, 7, 0, 0) == [0, 1, 2, 0, 1, 2, 0]
    drawn = task_order([900, 100], "temperature", 2.0, 4000, seed=3, epoch=1)
    share = Counter(drawn)[1] / len(drawn)
    assert 0.22 < share < 0.28  # 0.25 expected
    assert drawn == task_order([900, 100], "temperature", 2.0, 4000, seed=3, epoch=1)
    assert drawn != task_order([900, 100], "temperature", 2.0, 4000, seed=3, epoch=2)


def test_every_batch_holds_rows_of_one_subtask() -> None:
    lengths = [np.arange(20) % 7 + 1, np.arange(12) % 5 + 1]
    batches = MultitaskBatches(lengths, 4, "round_robin", 2.0, seed=0)
    epoch = batches(0)
    assert len(epoch) == 5 + 3  # every sub-task's batches of one pass, together
    for batch in epoch:
        assert len({batches.task_of(r) for r in batch}) == 1
    # round robin: sub-task 1 runs out after 3 batches and starts its next pass
    assert [batches.task_of(b[0]) for b in epoch] == [0, 1] * 4
    rows = [r for b in epoch if batches.task_of(b[0]) == 0 for r in b]
    assert len(set(rows)) == len(rows) == 16  # 4 of sub-task 0's 5 batches, no row twice
    assert set(rows) <= set(range(20))
    assert epoch == batches(0)


def test_multitask_metadata_round_trips(tmp_path: Path) -> None:
    meta = MultitaskMeta(
        task="multitask",
        tasks=[
            HeadMeta(name="english", labels=["negative", "positive"]),
            HeadMeta(name="topic", labels=["food", "sport", "weather"]),
        ],
        base_model="multilingual-e5-small",
        text_prefix="query: ",
        max_length=96,
    )
    write_model_meta(tmp_path, meta)
    back = read_model_meta(tmp_path)
    assert back == meta
    assert isinstance(back, MultitaskMeta) and back.task_names == ["english", "topic"]
    assert back.head("topic").labels == ["food", "sport", "weather"]


def test_damaged_multitask_metadata_is_unavailable(tmp_path: Path) -> None:
    data = {
        "task": "multitask",
        "tasks": [{"name": "a", "labels": ["x", "y"]}, {"name": "a", "labels": ["x", "y"]}],
        "max_length": 32,
    }
    (tmp_path / "lmforge.json").write_text(json.dumps(data))
    with pytest.raises(ModelUnavailableError, match="sub-task names must be distinct"):
        read_model_meta(tmp_path)
