"""The ``multitask`` section of a recipe: the sub-tasks one shared encoder learns at once.

``data.source`` is the first sub-task (named by ``multitask.name``); ``multitask.tasks`` adds
the others, each a source of its own (``builtin`` or ``path``, its columns, ``limit``) with its
name and loss weight. All share ``data.cleaning`` and ``data.split``. Every training batch comes
from one sub-task, chosen by ``multitask.sampling``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from lmforge.recipe.source import Section, SourceConfig

SUBTASK_NAME = r"^[a-z][a-z0-9_-]{0,31}$"

SubTaskName = Annotated[str, Field(pattern=SUBTASK_NAME)]
LossWeight = Annotated[float, Field(gt=0, le=100)]


class SubTaskSource(SourceConfig):
    """One more sub-task of a multi-task model: its name, its labelled source, its loss weight."""

    name: SubTaskName = Field(
        description="The sub-task's name: what POST /v1/predict's task field picks "
        "(lower-case letters, digits, '_' or '-')."
    )
    loss_weight: LossWeight = Field(
        default=1.0, description="Multiplies this sub-task's cross-entropy in the loss."
    )


class MultitaskSection(Section):
    """task: multitask — one shared encoder, one classification head per sub-task.
    data.source is the first sub-task (named by name); tasks adds the others."""

    name: SubTaskName = Field(default="main", description="The sub-task name of data.source.")
    loss_weight: LossWeight = Field(
        default=1.0, description="Multiplies data.source's cross-entropy in the loss."
    )
    tasks: list[SubTaskSource] = Field(
        default_factory=list,
        description="The other sub-tasks (at least one): name, builtin or path, text_column, "
        "label_column, limit, loss_weight; cleaning and split as data's.",
    )
    sampling: Literal["proportional", "temperature", "round_robin"] = Field(
        default="temperature",
        description="Which sub-task each training batch comes from: proportional to its "
        "training rows; temperature: to rows^(1/temperature) (small tasks sampled more); "
        "round_robin: each in turn.",
    )
    temperature: Annotated[float, Field(ge=1, le=100)] = Field(
        default=2.0,
        description="sampling temperature: 1 is proportional, large tends to uniform.",
    )

    @model_validator(mode="after")
    def _distinct_names(self) -> MultitaskSection:
        names = [self.name, *(t.name for t in self.tasks)]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"sub-task name(s) {', '.join(twice)} used twice: name each once")
        return self

    @property
    def names(self) -> list[str]:
        """Every sub-task's name, data.source's first."""
        return [self.name, *(t.name for t in self.tasks)]
