"""``lmforge generate`` and ``lmforge app assistant``: text from a decoder, streamed as it is
produced, and an FAQ assistant's cited answers."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from lmforge.cli.output import RichProgress, err, out, print_json

if TYPE_CHECKING:
    from lmforge.assistant.explanation import Explanation


def generate(
    prompt: Annotated[str, typer.Argument(help="The message (chat) or text to continue.")],
    model: Annotated[
        str,
        typer.Option("--model", "-m", help="A catalogue decoder or a local causal-LM folder."),
    ] = "smollm2-135m-instruct",
    system: Annotated[str | None, typer.Option(help="A system message (chat only).")] = None,
    raw: Annotated[
        bool, typer.Option("--raw", help="Continue the text as is, without the chat template.")
    ] = False,
    max_tokens: Annotated[int, typer.Option(min=1, help="Tokens to generate at most.")] = 256,
    temperature: Annotated[float, typer.Option(min=0, help="0 is greedy.")] = 0.7,
    top_p: Annotated[float, typer.Option(min=0, max=1)] = 0.9,
    top_k: Annotated[int, typer.Option(min=0, help="0: off.")] = 0,
    repetition_penalty: Annotated[float, typer.Option(min=0)] = 1.1,
    stop: Annotated[
        list[str] | None, typer.Option(help="Stop at this string (repeatable).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Same seed, same text.")] = None,
    weights: Annotated[str, typer.Option(help="int8, bf16 or fp32.")] = "int8",
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON when done.")] = False,
) -> None:
    """Generate text with a decoder, streamed to the terminal as it is produced."""
    from lmforge.runtime.completion import complete_prompt
    from lmforge.runtime.generation import SamplingParams

    params = SamplingParams(
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        repetition_penalty=repetition_penalty,
        stop=tuple(stop or ()),
        seed=seed,
    )

    def show(delta: str, _: object) -> None:
        out.file.write(delta)
        out.file.flush()

    done = complete_prompt(
        prompt,
        params,
        model=model,
        system=system,
        raw=raw,
        weights=weights,
        on_text=None if json_output else show,
        progress=RichProgress(),
    )
    if json_output:
        print_json(done.to_json())
        return
    out.file.write("\n")
    if done.finish_reason == "length":  # no silent cut: say why the answer ends here
        err.print(
            f"[stopped at --max-tokens {max_tokens}; raise it for a longer answer]",
            style="dim",
            markup=False,
            highlight=False,
        )


def app_assistant(
    questions: Annotated[list[str] | None, typer.Argument(help="Questions to answer.")] = None,
    faq: Annotated[
        str | None,
        typer.Option(
            "--faq",
            help="debian_faq, chatterbot_support or a CSV/JSON/JSONL file [default: debian_faq].",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", help="A registered assistant (from an assistant recipe) instead of --faq."
        ),
    ] = None,
    encoder: Annotated[
        str | None,
        typer.Option(
            help="Encoder for --faq: catalogue, folder or similarity model "
            "[default: multilingual-e5-small]."
        ),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            help="Answer only at or above this score, for every language "
            "[default: tuned per language]."
        ),
    ] = None,
    top_k: Annotated[int | None, typer.Option("--top-k", min=1, max=20)] = None,
    generate: Annotated[
        bool,
        typer.Option(
            "--generate",
            help="Also write an answer from the top entries with --decoder (questions in a "
            "language it covers).",
        ),
    ] = False,
    decoder: Annotated[str, typer.Option(help="Decoder for --generate.")] = "smollm2-135m-instruct",
    explain: Annotated[
        bool,
        typer.Option(
            "--explain",
            help="Show which entry won by how much over the runner-up and the threshold, and "
            "the question's words it shares.",
        ),
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Answer questions from an FAQ with the cited entry, or refuse (questions from the
    arguments, else one per line of stdin). To serve it: `assistant: {faq: ...}` in the
    `lmforge serve` config."""
    from lmforge.assistant.ask import ask_assistant

    # stdin is read lazily, by the library, once the options have been checked
    asked = list(questions or []) or (line.strip() for line in sys.stdin if line.strip())
    answers = ask_assistant(
        asked,
        faq=faq,
        model=model,
        encoder=encoder,
        threshold=threshold,
        top_k=top_k,
        generate=generate,
        decoder=decoder,
        progress=RichProgress(),
    )
    if json_output:
        print_json([a.to_json(explain=explain) for a in answers])
        return
    for a in answers:
        out.print(f"[bold]Q:[/bold] {a.question}", highlight=False)
        if a.answered:
            best = a.hits[0]
            out.print(f"[bold]A:[/bold] {a.text}", highlight=False)
            out.print(f"   — {best.entry.citation} (score {best.score:.3f})", highlight=False)
            if a.generated:
                out.print(f"[bold]Written answer:[/bold] {a.generated}", highlight=False)
        else:
            out.print(f"[bold]A:[/bold] {a.text}", highlight=False)
            out.print(
                f"   (best match {a.hits[0].entry.citation} at {a.hits[0].score:.3f}, under "
                f"the threshold {a.threshold:.3f})",
                highlight=False,
            )
        if explain and a.explanation is not None:
            for line in explanation_lines(a.explanation):
                out.print(f"   {line}", highlight=False, markup=False)
        out.print()


def explanation_lines(why: Explanation) -> list[str]:
    """An answer's explanation as a few lines of text."""
    if why.winner is None:
        return ["why: no entry could be scored"]
    win = why.winner
    lines = [f'why: "{win.question}" ({win.citation}) scored {win.score:.3f}']
    if why.runner_up is not None and why.margin is not None:
        up = why.runner_up
        lines.append(
            f'     {why.margin:.3f} ahead of the runner-up "{up.question}" ({up.citation}, '
            f"{up.score:.3f})"
        )
    over = why.over_threshold or 0.0
    side = "over" if over >= 0 else "under"
    lines.append(f"     {abs(over):.3f} {side} the threshold {why.threshold:.3f}")
    words = ", ".join(why.shared_words) if why.shared_words else "none"
    lines.append(f"     shared words: {words} ({why.matching})")
    return lines
