"""Pictures of a run: the confusion matrix and the training curve (PNG, matplotlib Agg)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]], labels: Sequence[str], path: Path
) -> None:
    n = len(labels)
    fig, ax = plt.subplots(figsize=(2.2 + 0.7 * n, 1.8 + 0.7 * n), dpi=110)
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), labels, rotation=30, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    peak = max(max(row) for row in matrix) or 1
    for i in range(n):
        for j in range(n):
            colour = "white" if matrix[i][j] > peak / 2 else "black"
            ax.text(j, i, str(matrix[i][j]), ha="center", va="center", color=colour)
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_title("Confusion matrix (test)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_training_curve(history: Sequence[dict[str, float]], path: Path) -> None:
    steps = [h["step"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=110)
    left.plot(steps, [h["train_loss"] for h in history], marker="o", label="train")
    left.plot(steps, [h["val_loss"] for h in history], marker="o", label="validation")
    left.set_xlabel("step")
    left.set_ylabel("loss")
    left.legend()
    right.plot(steps, [h["val_accuracy"] for h in history], marker="o", label="accuracy")
    right.plot(steps, [h["val_macro_f1"] for h in history], marker="o", label="macro-F1")
    right.set_xlabel("step")
    right.set_ylabel("validation")
    right.legend()
    fig.suptitle("Training curve")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
