"""The model card (README.md) written into every registered version."""

from __future__ import annotations

from typing import Any

from lmforge.recipe import Recipe


def percent(value: float | None) -> str:
    """A 0–1 score as a percentage with two decimals; "—" where there is none."""
    return "—" if value is None else f"{100 * value:.2f}"


def model_card(
    recipe: Recipe,
    card: dict[str, Any],
    metrics: dict[str, Any],
    baselines: dict[str, dict[str, Any]],
    training: dict[str, Any],
    base_name: str,
) -> str:
    rows = [("this model", metrics), *baselines.items()]
    table = ["| model | accuracy | macro-F1 | ROC-AUC |", "|---|---|---|---|"]
    table += [
        f"| {name} | {percent(m['accuracy'])} | {percent(m['macro_f1'])} "
        f"| {percent(m.get('roc_auc'))} |"
        for name, m in rows
    ]
    per_class = ["| label | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    per_class += [
        f"| {label} | {percent(v['precision'])} | {percent(v['recall'])} | {percent(v['f1'])} "
        f"| {v['support']} |"
        for label, v in metrics["per_class"].items()
    ]
    adaptation = recipe.adaptation
    how = (
        "full fine-tuning"
        if adaptation.method == "full"
        else (
            f"LoRA (r={adaptation.lora.r}, alpha={adaptation.lora.alpha}, "
            f"targets {', '.join(adaptation.lora.target_modules)}), merged into the base; "
            "the adapter is kept in adapter/"
        )
    )
    t = recipe.training
    return "\n".join(
        [
            f"# {recipe.model_name}",
            "",
            recipe.description or f"A {recipe.task} model trained by lmforge.",
            "",
            "## Model",
            f"- task: {recipe.task}; labels: {', '.join(card['labels'])}",
            f"- base: `{base_name}`; adaptation: {how}",
            f"- training: {training['steps']} steps, batch {t.batch_size}, lr {t.learning_rate}, "
            f"{training['precision']}, max length {t.max_length}, seed {t.seed}"
            + (" (stopped early)" if training["stopped_early"] else ""),
            f"- trainable parameters: {training['trainable_parameters']:,} of "
            f"{training['total_parameters']:,}",
            "",
            "## Test results (held-out split, percent)",
            "",
            *table,
            "",
            *per_class,
            "",
            "![confusion matrix](confusion_matrix.png)",
            "",
            "![training curve](training_curve.png)",
            "",
            "## Data",
            f"Source `{card['source']}`: {card['rows_raw']} rows, {card['rows_used']} used after "
            "cleaning and leakage removal; see data_card.md for counts per split and label.",
            "",
            "## Limitations",
            "Scores hold for text like the training data; check the data card for its language "
            "and domain before relying on the model elsewhere. The resolved recipe that produced "
            "this version is in recipe.yaml.",
            "",
        ]
    )
