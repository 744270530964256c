from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, PreTrainedModel

from conftest import NEGATIVE, POSITIVE
from lmforge.compress.distill import (
    CompressionError,
    distill,
    make_student,
    student_layers,
)
from lmforge.data.sources import load_builtin
from lmforge.models.classifier import (
    build_classifier,
    load_tokenizer,
    pad_token_id,
    predict_logits,
    softmax,
    tokenize,
)

pytestmark = pytest.mark.usefixtures("one_thread")


class Recorder:
    """A ProgressReporter that remembers what it was told."""

    def __init__(self) -> None:
        self.started: list[tuple[str, int]] = []
        self.advanced = 0
        self.losses: list[float] = []
        self.stopped = False

    def start(self, description: str, total: int, completed: int = 0) -> None:
        self.started.append((description, total))

    def advance(self, steps: int = 1, **metrics: float) -> None:
        self.advanced += steps
        self.losses.append(metrics["loss"])

    def note(self, message: str) -> None:
        pass

    def stop(self) -> None:
        self.stopped = True


def _deep_teacher(tiny_base: Path, layers: int) -> PreTrainedModel:
    config = AutoConfig.from_pretrained(str(tiny_base), num_hidden_layers=layers, num_labels=2)
    torch.manual_seed(0)
    model: PreTrainedModel = AutoModelForSequenceClassification.from_config(config)
    return model.eval()


def test_student_layers_are_evenly_spaced() -> None:
    assert student_layers(12, 6) == [0, 2, 4, 7, 9, 11]  # DistilBERT's choice
    assert student_layers(6, 3) == [0, 3, 5]
    assert student_layers(5, 2) == [0, 4]
    assert student_layers(4, 1) == [0]


def test_make_student_copies_the_teachers_layers(tiny_base: Path) -> None:
    teacher = _deep_teacher(tiny_base, 5)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = make_student(teacher, 3)
    assert student.config.num_hidden_layers == 3 and teacher.config.num_hidden_layers == 5
    assert not student.training
    t_layers, s_layers = teacher.base_model.encoder.layer, student.base_model.encoder.layer
    assert len(s_layers) == 3
    for s_index, t_index in enumerate([0, 2, 4]):
        s_state, t_state = s_layers[s_index].state_dict(), t_layers[t_index].state_dict()
        assert s_state.keys() == t_state.keys()
        for key in s_state:
            torch.testing.assert_close(s_state[key], t_state[key], rtol=0, atol=0)
    s_all = student.state_dict()
    for key, value in teacher.state_dict().items():
        if ".encoder.layer." not in key:  # embeddings, pooler, classifier
            torch.testing.assert_close(s_all[key], value, rtol=0, atol=0)
    # Copies, not shared tensors: training the student leaves the teacher alone.
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    for key, value in teacher.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


@pytest.mark.parametrize("layers", [0, -1, 5, 6])
def test_bad_student_depths_are_refused(tiny_base: Path, layers: int) -> None:
    with pytest.raises(CompressionError, match=r"needs 1 to 4 layers.*choose a layer count"):
        make_student(_deep_teacher(tiny_base, 5), layers)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("temperature", 0.0, "temperature must be above 0"),
        ("alpha", 1.5, "alpha must be between 0 and 1"),
        ("epochs", 0.0, "must be positive"),
    ],
)
def test_bad_distillation_options_are_refused(
    tiny_base: Path, option: str, value: float, message: str
) -> None:
    teacher = build_classifier(tiny_base, ["negative", "positive"])
    rows = tokenize(load_tokenizer(tiny_base), POSITIVE, 16)
    with pytest.raises(CompressionError, match=message):
        distill(
            teacher, make_student(teacher, 1), rows, [1] * len(rows), pad_id=0, **{option: value}
        )


def test_a_student_with_other_labels_is_refused(tiny_base: Path) -> None:
    teacher = build_classifier(tiny_base, ["negative", "positive"])
    student = build_classifier(tiny_base, ["a", "b", "c"])
    rows = tokenize(load_tokenizer(tiny_base), NEGATIVE, 16)
    with pytest.raises(CompressionError, match="teacher has 2 labels and the student 3"):
        distill(teacher, student, rows, [0] * len(rows), pad_id=0)


def _agreement(teacher: np.ndarray, student: np.ndarray) -> tuple[float, float]:
    """Share of rows where the argmax agrees, and mean KL(teacher ‖ student)."""
    p, q = softmax(teacher), softmax(student)
    kl = float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=-1)))
    return float(np.mean(teacher.argmax(-1) == student.argmax(-1))), kl


def test_distillation_brings_a_student_closer_to_its_teacher_on_real_reviews(
    tiny_base: Path,
) -> None:
    reviews = load_builtin("rotten_tomatoes").sample(200, random_state=0)
    tokenizer = load_tokenizer(tiny_base)
    rows = tokenize(tokenizer, reviews["text"].tolist(), 48)
    labels = (reviews["label"] == "positive").astype(int).tolist()
    pad_id = pad_token_id(tokenizer)

    torch.manual_seed(0)
    teacher = build_classifier(tiny_base, ["negative", "positive"])
    # alpha=0 is plain fine-tuning on the labels: how the teacher gets trained here.
    distill(
        teacher,
        teacher,
        rows,
        labels,
        pad_id=pad_id,
        alpha=0.0,
        epochs=6,
        learning_rate=3e-3,
        batch_size=16,
    )
    teacher_logits = predict_logits(teacher, rows, pad_id=pad_id)
    assert np.mean(teacher_logits.argmax(-1) == np.array(labels)) > 0.8  # it learned the slice

    # Cut from the untrained classifier rather than the teacher, so it starts far from it
    # (in a 32-wide random base the teacher's own first layer already agrees with it).
    torch.manual_seed(1)
    student = make_student(build_classifier(tiny_base, ["negative", "positive"]), 1)
    before = _agreement(teacher_logits, predict_logits(student, rows, pad_id=pad_id))
    progress = Recorder()
    report = distill(
        teacher,
        student,
        rows,
        labels,
        pad_id=pad_id,
        alpha=0.9,
        epochs=5,
        learning_rate=5e-3,
        batch_size=16,
        progress=progress,
    )
    after = _agreement(teacher_logits, predict_logits(student, rows, pad_id=pad_id))
    assert after[0] > 0.9 and after[0] > before[0] + 0.2, (before, after)
    assert after[1] < 0.8 * before[1], (before, after)  # KL to the teacher falls too

    assert report.steps == 5 * 13 and report.samples == 5 * 200
    assert progress.started == [("distilling", report.steps)] and progress.stopped
    assert progress.advanced == report.steps
    assert report.final_loss == pytest.approx(np.mean(progress.losses[-13:]))
    assert report.final_loss < np.mean(progress.losses[:13])
    assert report.to_json()["steps"] == report.steps
    assert not student.training
