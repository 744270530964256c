"""Models: the catalogue of base models and loading them with a task head."""

from lmforge.models.catalogue import CATALOGUE, CatalogueEntry, ResolvedBase

__all__ = ["CATALOGUE", "CatalogueEntry", "ResolvedBase"]
