"""Pictures of a run: the confusion matrix, the training curve, the compression trade-off and
the assistant's refusal scores (PNG, matplotlib Agg)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

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


def plot_tradeoff(
    variants: Sequence[dict[str, Any]], chosen: str | None, max_drop: float, path: Path
) -> None:
    """Accuracy against batch throughput, one point per variant; the budget as a band."""
    structures = sorted({v["structure"] for v in variants})
    markers = dict(zip(structures, "osD^v", strict=False))
    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=110)
    reference = next((v for v in variants if v["name"] == "original/torch-fp32"), None)
    if reference is not None:
        floor = 100 * reference["accuracy"] - max_drop
        ax.axhspan(floor, 100, color="tab:green", alpha=0.08, label=f"within {max_drop:g} pt")
        ax.axhline(floor, color="tab:green", linewidth=0.8)
    for structure in structures:
        rows = [v for v in variants if v["structure"] == structure]
        ax.scatter(
            [v["sequences_per_second"] for v in rows],
            [100 * v["accuracy"] for v in rows],
            marker=markers[structure],
            s=50,
            label=structure,
        )
        for v in rows:
            ax.annotate(
                v["format"] + (" ★" if v["name"] == chosen else ""),
                (v["sequences_per_second"], 100 * v["accuracy"]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
            )
    accuracies = [100 * v["accuracy"] for v in variants]
    if accuracies:
        ax.set_ylim(min(accuracies) - 1.5, max(accuracies) + 1.0)
    ax.set_xlabel("batch throughput (sequences/s, higher is better)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Compression trade-off")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_refusal_scores(
    in_domain: Sequence[float], off_topic: Sequence[float], threshold: float, path: Path
) -> None:
    """Best-entry similarity of in-domain and off-topic questions, with the refusal threshold:
    how cleanly the assistant can tell what it should answer."""
    fig, ax = plt.subplots(figsize=(6.4, 3.4), dpi=110)
    low, high = min(*in_domain, *off_topic), max(*in_domain, *off_topic)
    bins = [low + (high - low) * i / 40 for i in range(41)] if high > low else 10
    ax.hist(in_domain, bins=bins, alpha=0.6, label=f"FAQ questions ({len(in_domain)})")
    ax.hist(off_topic, bins=bins, alpha=0.6, label=f"off-topic questions ({len(off_topic)})")
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set_xlabel("cosine similarity of the best entry")
    ax.set_ylabel("questions")
    ax.legend(fontsize="small")
    ax.set_title("Answer or refuse")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
