"""Where lmforge keeps its state: one home folder and one database URL.

``LMFORGE_HOME`` (default ``~/.lmforge``) holds the model registry, run folders and the cache of
converted base models; ``LMFORGE_DATABASE_URL`` (default: a SQLite file in the home) holds the
registry's rows. Replicas of a server share both.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where lmforge keeps its state: ``home`` (``LMFORGE_HOME``, default ``~/.lmforge``) holds
    the registry's version folders, the run folders, the converted-model cache and the SQLite
    database; ``database_url`` (``LMFORGE_DATABASE_URL``) puts the registry's rows in another
    database (PostgreSQL for several replicas)."""

    model_config = SettingsConfigDict(env_prefix="LMFORGE_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path.home() / ".lmforge")
    database_url: str | None = None

    @property
    def registry_dir(self) -> Path:
        return self.home / "registry"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'lmforge.db').resolve()}"


def get_settings() -> Settings:
    return Settings()
