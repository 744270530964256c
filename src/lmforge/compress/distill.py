"""Knowledge distillation of a classifier into a student with fewer layers.

The student is the teacher with evenly spaced encoder layers (DistilBERT's recipe: start from
the teacher's own weights, not from scratch), trained on the teacher's temperature-softened logits
and the labels (Hinton et al. 2015). The teacher's logits are computed once, up front: the
teacher is frozen, so recomputing them every epoch would only repeat its forward passes.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from transformers import PreTrainedModel

from lmforge.compress._finetune import (
    CompressionError,
    DistillReport,
    check_rows,
    encoder_layers,
    fit_classifier,
)
from lmforge.models.classifier import predict_logits
from lmforge.models.loading import MODEL_BUILD_LOCK
from lmforge.progress import ProgressReporter

__all__ = ["CompressionError", "DistillReport", "distill", "make_student", "student_layers"]


def student_layers(teacher_layers: int, layers: int) -> list[int]:
    """Which teacher layers a ``layers``-deep student starts from: evenly spaced, first and
    last included (12 → 6 gives 0, 2, 4, 7, 9, 11, as DistilBERT); one layer: the first."""
    if layers == 1:
        return [0]
    step = (teacher_layers - 1) / (layers - 1)
    return [int(i * step + 0.5) for i in range(layers)]


def make_student(teacher: PreTrainedModel, layers: int) -> PreTrainedModel:
    """A ``layers``-deep copy of ``teacher``: its embeddings, pooler and classifier, and
    evenly spaced encoder layers (:func:`student_layers`). The teacher is left untouched."""
    teacher_layers = encoder_layers(teacher)
    depth = len(teacher_layers)
    if depth < 2:
        raise CompressionError(
            "a one-layer teacher has no smaller student", "distill from a deeper model"
        )
    if not 1 <= layers < depth:
        raise CompressionError(
            f"a student of this {depth}-layer teacher needs 1 to {depth - 1} layers, not {layers}",
            f"choose a layer count between 1 and {depth - 1}",
        )
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = layers
    with MODEL_BUILD_LOCK, torch.device(next(teacher.parameters()).device):
        student: PreTrainedModel = type(teacher)(config)
    prefix = next(name for name, mod in teacher.named_modules() if mod is teacher_layers)
    prefix += "."
    source = student_layers(depth, layers)
    weights = teacher.state_dict()
    state = {}
    for key in student.state_dict():
        if key.startswith(prefix):
            index, rest = key[len(prefix) :].split(".", 1)
            state[key] = weights[f"{prefix}{source[int(index)]}.{rest}"]
        else:
            state[key] = weights[key]
    student.load_state_dict(state, strict=True)
    student.eval()
    return student


def distill(
    teacher: PreTrainedModel,
    student: PreTrainedModel,
    rows: Sequence[Sequence[int]],
    labels: Sequence[int],
    *,
    pad_id: int,
    temperature: float = 2.0,
    alpha: float = 0.5,
    epochs: float = 2.0,
    learning_rate: float = 1e-4,
    batch_size: int = 32,
    seed: int = 42,
    progress: ProgressReporter | None = None,
) -> DistillReport:
    """Train ``student`` in place on ``teacher``'s soft labels and the true ``labels``.

    Loss: ``alpha · T² · KL(softmax(teacher/T) ‖ softmax(student/T)) + (1 − alpha) · CE``; the
    T² keeps the soft term's gradients on the scale of the hard one's as T changes. fp32.
    ``alpha=0`` is plain fine-tuning on the labels (the teacher is then not run).
    """
    check_rows(rows, labels)
    if temperature <= 0:
        raise CompressionError(
            f"temperature must be above 0, not {temperature}", "use 1 to 4; 2 is usual"
        )
    if not 0.0 <= alpha <= 1.0:
        raise CompressionError(
            f"alpha must be between 0 and 1, not {alpha}",
            "give the weight of the teacher's soft labels, e.g. 0.5",
        )
    if epochs <= 0 or batch_size < 1 or learning_rate <= 0:
        raise CompressionError(
            f"epochs, batch size and learning rate must be positive "
            f"(got {epochs}, {batch_size}, {learning_rate})",
            "use e.g. epochs 2, batch size 32, learning rate 1e-4",
        )
    n_teacher, n_student = teacher.config.num_labels, student.config.num_labels
    if n_teacher != n_student:
        raise CompressionError(
            f"the teacher has {n_teacher} labels and the student {n_student}",
            "build the student from the teacher with make_student",
        )
    soft = None
    if alpha > 0:
        soft = predict_logits(teacher, rows, pad_id=pad_id, batch_size=max(batch_size, 64))
    return fit_classifier(
        student,
        rows,
        labels,
        pad_id=pad_id,
        soft_targets=soft,
        temperature=temperature,
        alpha=alpha,
        epochs=epochs,
        learning_rate=learning_rate,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
        description="distilling",
    )
