"""The ``recommendation:`` section of a recipe (``task: recommendation``): which method ranks
the items, how the ratings are split, and each method's settings (docs/recommend.md)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

RecommendMethod = Literal["popularity", "itemknn", "als", "bpr", "text", "hybrid"]


class RecommendationSection(BaseModel):
    """task: recommendation — rank items for a user from their ratings and the items' text."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: RecommendMethod = Field(
        default="hybrid",
        description="popularity or itemknn (baselines), als or bpr (collaborative filtering "
        "by the implicit library), text (cosine with the recency-weighted mean of the liked "
        "items' text vectors, by model.base) or hybrid (ALS and text, blended on validation).",
    )
    protocol: Literal["leave_last_out", "time"] = Field(
        default="leave_last_out",
        description="leave_last_out: each user's last rating is the test, the one before it "
        "the validation; time: every rating after a global time quantile is the test.",
    )
    time_quantile: Annotated[float, Field(gt=0, lt=1)] = Field(
        default=0.9, description="protocol time: the share of the timeline before the test."
    )
    positive_rating: Annotated[float, Field(gt=0)] = Field(
        default=4.0, description="Ratings at least this are positives (liked items, targets)."
    )
    cold_fraction: Annotated[float, Field(ge=0, lt=0.5)] = Field(
        default=0.1,
        description="Seeded share of items whose ratings are all held out: the cold-start test.",
    )
    max_users: Annotated[int, Field(ge=3)] | None = Field(
        default=None, description="Keep only the first N users by id (quick runs)."
    )
    factors: Annotated[int, Field(ge=2, le=1024)] = Field(
        default=64, description="als/bpr/hybrid: latent factors per user and item."
    )
    iterations: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=15, description="als/bpr/hybrid: passes over the ratings (bpr: epochs)."
    )
    regularization: Annotated[float, Field(ge=0)] = Field(
        default=0.05, description="als/bpr/hybrid: L2 penalty on the factors."
    )
    learning_rate: Annotated[float, Field(gt=0)] = Field(
        default=0.01, description="bpr: the SGD step."
    )
    neighbours: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=50, description="itemknn: the cosine neighbours kept per item."
    )
    half_life: Annotated[float, Field(gt=0)] = Field(
        default=10.0,
        description="text/hybrid: a liked item N ratings older than the last weighs "
        "0.5^(N/half_life) in the user's profile.",
    )
    blend: Annotated[float, Field(ge=0, le=1)] | None = Field(
        default=None,
        description="hybrid: the collaborative part's weight; default: the one of 0, 0.1, …, 1 "
        "with the best validation HR@10.",
    )
    seed: int = Field(default=42, description="Seed of the cold-item draw and the factor fits.")
