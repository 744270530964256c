"""``lmforge app recommend``: a registered recommender's ranked list, with reasons, for a user,
for liked items or for a text query."""

from __future__ import annotations

from typing import Annotated

import typer

from lmforge.cli.output import out, print_json


def app_recommend(
    model: Annotated[str, typer.Argument(help="A registered recommender: NAME[:vN].")],
    user: Annotated[
        int | None, typer.Option("--user", help="A user id the model was trained on.")
    ] = None,
    like: Annotated[
        list[str] | None,
        typer.Option("--like", help="An item the user liked: id or exact title (repeatable)."),
    ] = None,
    text: Annotated[str | None, typer.Option("--text", help="A text query instead.")] = None,
    k: Annotated[int, typer.Option("-k", min=1, max=100, help="How many items.")] = 10,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Recommend items with a registered recommender (a recommendation recipe's version), each
    with the liked items it is closest to. To serve it: POST /v1/recommend."""
    from lmforge.runtime.recommend_service import open_recommender

    result = open_recommender(model).recommend(
        user_id=user, liked_items=list(like) if like else None, text=text, k=k
    )
    if json_output:
        print_json(result.to_json())
        return
    out.print(
        f"[bold]{result.model}[/bold] ({result.method}) from: {'; '.join(result.based_on)}",
        highlight=False,
    )
    for rank, item in enumerate(result.items, 1):
        because = f" — because you liked {', '.join(item.because)}" if item.because else ""
        out.print(
            f"{rank:>3}. {item.title} [dim]({item.score:.3f}){because}[/dim]", highlight=False
        )
