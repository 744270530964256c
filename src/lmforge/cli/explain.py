"""``lmforge explain``: why a registered classifier gives a text its label, word by word."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from lmforge.cli.output import out, print_json
from lmforge.errors import LmforgeError


def explain(
    model: Annotated[str, typer.Argument(help="NAME[:VERSION] of a registered classifier.")],
    texts: Annotated[list[str], typer.Argument(help="Texts to explain.")],
    method: Annotated[
        str,
        typer.Option("--method", "-m", help="ig (integrated gradients), attention or occlusion."),
    ] = "ig",
    steps: Annotated[
        int | None, typer.Option("--steps", help="Integrated-gradients steps (default 32).")
    ] = None,
    target: Annotated[
        str | None,
        typer.Option("--target", help="The label to explain (default: the predicted one)."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write a heat-map page to this file.")
    ] = None,
    png: Annotated[
        Path | None,
        typer.Option("--png", help="With --method attention and one text: draw its attention."),
    ] = None,
) -> None:
    """Explain a registered classifier's predictions: a score per word."""
    from lmforge.explain import explain_version
    from lmforge.explain.render import TRUNCATED_NOTE, write_attention_png, write_html

    if png is not None and (method != "attention" or len(texts) != 1):
        raise LmforgeError(
            "--png draws the attention of one text", "use --method attention with one text"
        )
    explanations = explain_version(model, texts, method, steps=steps, target=target)  # type: ignore[arg-type]
    if html is not None:
        write_html(html, explanations)
    if png is not None:
        write_attention_png(png, explanations[0])
    if json_output:
        print_json([e.to_json() for e in explanations])
        return
    for e in explanations:
        line = Text()
        scale = max((abs(w.score) for w in e.words), default=0.0) or 1.0
        cursor = 0
        for w in e.words:
            line.append(e.text[cursor : w.start])
            strength = min(1.0, abs(w.score) / scale)
            colour = "green" if w.score >= 0 else "red"
            line.append(
                e.text[w.start : w.end],
                style=f"bold {colour}" if strength > 0.5 else colour if strength > 0.15 else "",
            )
            cursor = w.end
        line.append(e.text[cursor:])
        out.print(line)
        summary = (
            f"{e.label} ({e.score:.3f}); explaining {e.target} by {e.method} on {e.explained_with}"
        )
        if e.completeness_error is not None:
            difference = abs(e.logit_difference or 0)
            summary += f"; completeness error {e.completeness_error:.4f} of {difference:.4f}"
        if e.truncated:
            summary += "; " + TRUNCATED_NOTE
        if not e.agrees:
            summary += "; these weights predict another label than the served model"
        out.print(Text(summary, style="dim"))
        top = sorted(e.words, key=lambda w: -w.score)[:5]
        out.print(Text("top: " + ", ".join(f"{w.word} {w.score:+.3f}" for w in top), style="dim"))
    if html is not None:
        out.print(Text(f"wrote {html}", style="dim"))
    if png is not None:
        out.print(Text(f"wrote {png}", style="dim"))
