"""The model registry: versions on disk and in a database, with stages and lineage."""

from lmforge.registry.store import (
    STAGES,
    ModelVersion,
    Registry,
    StageChange,
    VersionInUseError,
    parse_ref,
)

__all__ = [
    "STAGES",
    "ModelVersion",
    "Registry",
    "StageChange",
    "VersionInUseError",
    "parse_ref",
]
