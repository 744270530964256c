"""Explanations of a registered classifier's predictions: per-word attributions by integrated
gradients (Captum), attention (per layer and head, and rollout) and occlusion, rendered for a
terminal, as an HTML heat map and as a PNG of the attention, and measured for faithfulness."""

from lmforge.explain.explainer import Explainer, attention_rollout, last_layer_attention
from lmforge.explain.explanation import DEFAULT_STEPS, METHODS, Explanation, Method, WordScore
from lmforge.explain.versions import ExplainTarget, explain_target, explain_version, load_explainer
from lmforge.explain.words import Word, drop_word, group_tokens, word_scores

__all__ = [
    "DEFAULT_STEPS",
    "METHODS",
    "ExplainTarget",
    "Explainer",
    "Explanation",
    "Method",
    "Word",
    "WordScore",
    "attention_rollout",
    "drop_word",
    "explain_target",
    "explain_version",
    "group_tokens",
    "last_layer_attention",
    "load_explainer",
    "word_scores",
]
