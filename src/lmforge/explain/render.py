"""Explanations drawn: an HTML heat map (one self-contained page) and the attention as a PNG.

Every piece of text on the page — the texts, the words, the labels, the model's name — goes
through :func:`html.escape`, so a text holding ``<script>`` shows as text and never runs; the
page's Content-Security-Policy forbids scripts and remote content besides.
"""

from __future__ import annotations

import html
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lmforge.errors import LmforgeError
from lmforge.explain.explanation import Explanation

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; max-width: 60rem; color: #222; }
.text { font-size: 1.15rem; line-height: 2.2; margin: .5rem 0 1.5rem; }
.w { padding: .15rem .2rem; border-radius: .25rem; }
.meta { color: #555; font-size: .9rem; }
"""


#: Said beside a text longer than the model's max_length: its end is shown but not explained.
TRUNCATED_NOTE = "the text is longer than the model reads (max_length): its end is not explained"


def word_colour(score: float, scale: float) -> str:
    """Green towards the target label, red against it, white at zero (CSS rgba)."""
    strength = 0.0 if scale <= 0 else min(1.0, abs(score) / scale)
    rgb = "22, 163, 74" if score >= 0 else "220, 38, 38"
    return f"rgba({rgb}, {strength * 0.8:.3f})"


def _meta_line(e: Explanation) -> str:
    parts = [
        f"predicted <b>{html.escape(e.label)}</b> ({e.score:.3f})",
        f"explaining <b>{html.escape(e.target)}</b>",
        f"method {html.escape(e.method)}",
        f"on {html.escape(e.explained_with)}",
    ]
    if not e.agrees:
        parts.append("<b>these weights predict another label than the served model</b>")
    if e.truncated:
        parts.append(TRUNCATED_NOTE)
    if e.completeness_error is not None:
        parts.append(
            f"completeness error {e.completeness_error:.4f} of "
            f"{abs(e.logit_difference or 0):.4f} ({e.steps} steps)"
        )
    return " · ".join(parts)


def explanation_html(explanations: Sequence[Explanation]) -> str:
    """One page: each text with its words shaded by attribution, its prediction and method."""
    blocks = []
    for e in explanations:
        scale = max((abs(w.score) for w in e.words), default=0.0)
        spans = []
        cursor = 0
        for w in e.words:
            spans.append(html.escape(e.text[cursor : w.start]))
            spans.append(
                f'<span class="w" style="background:{word_colour(w.score, scale)}" '
                f'title="{w.score:+.4f}">{html.escape(e.text[w.start : w.end])}</span>'
            )
            cursor = w.end
        spans.append(html.escape(e.text[cursor:]))
        blocks.append(f'<p class="meta">{_meta_line(e)}</p>\n<p class="text">{"".join(spans)}</p>')
    title = html.escape(f"lmforge explain: {explanations[0].model}" if explanations else "")
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        # No script, frame, font or remote anything: even a text that escaped escaping could
        # not run or fetch (defence in depth; the page needs only its inline style).
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">\n"
        f"<title>{title}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n<h1>{title}</h1>\n"
        '<p class="meta">green: pushes towards the explained label; red: against it</p>\n'
        + "\n".join(blocks)
        + "\n</body>\n</html>\n"
    )


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all (a temporary file beside it, then a rename)."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise LmforgeError(f"folder {folder} does not exist", "create it or pick another path")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_html(path: Path, explanations: Sequence[Explanation]) -> None:
    write_atomically(path, explanation_html(explanations).encode("utf-8"))


def attention_png(explanation: Explanation) -> bytes:
    """The attention of an ``attention`` explanation as a PNG: one small map per layer and
    head (rows attend to columns), and the rollout beside them."""
    import io

    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    if explanation.attention is None:
        raise LmforgeError(
            "only an attention explanation has attention maps", "use --method attention"
        )
    maps = np.asarray(explanation.attention["layers"])
    rollout = np.asarray(explanation.attention["rollout"])
    tokens = list(explanation.attention["tokens"])
    layers, heads = maps.shape[:2]
    fig = plt.figure(figsize=(2.0 * heads + 4.5, 2.0 * layers + 0.5))
    grid = fig.add_gridspec(layers, heads + 2)
    for layer in range(layers):
        for head in range(heads):
            ax = fig.add_subplot(grid[layer, head])
            ax.imshow(maps[layer, head], cmap="viridis", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if layer == 0:
                ax.set_title(f"head {head}", fontsize=8)
            if head == 0:
                ax.set_ylabel(f"layer {layer}", fontsize=8)
    ax = fig.add_subplot(grid[:, heads:])
    ax.imshow(rollout, cmap="viridis")
    ax.set_title("rollout")
    ticks = range(len(tokens))
    ax.set_xticks(ticks, tokens, rotation=90, fontsize=7)
    ax.set_yticks(ticks, tokens, fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def write_attention_png(path: Path, explanation: Explanation) -> None:
    write_atomically(path, attention_png(explanation))
