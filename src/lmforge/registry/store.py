"""The model registry: version folders on disk plus one database row each.

A version becomes visible only when its row commits, and its folder is moved into place inside
that same transaction: a crash at any point leaves either a whole version or none. Stages follow
candidate → production → archived; promoting one version archives the previous production one.
Deleting a version removes its folder and its row as one step too (see ``tombstones.py``).
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from lmforge.errors import LmforgeError, ModelNotFoundError
from lmforge.recipe.schema import MODEL_NAME
from lmforge.registry import tombstones
from lmforge.registry.db import ModelVersionRow, as_utc, make_engine
from lmforge.settings import Settings, get_settings

STAGES = ("candidate", "production", "archived")
_REF = re.compile(r"^(?P<name>[a-z0-9][a-z0-9_.-]*)(?::(?P<version>v?\d+|production|latest))?$")


@dataclass(frozen=True)
class ModelVersion:
    """One registered version: its name and number (``ref`` is ``NAME:vN``), stage, folder,
    task, base model, labels, test metrics beside its baselines' and the version it was made
    from (``parent``, e.g. the source of a compressed variant)."""

    name: str
    version: int
    stage: str
    path: Path
    task: str
    base_model: str
    labels: list[str]
    metrics: dict[str, Any]
    baselines: dict[str, Any]
    parent: str | None
    created_at: datetime

    @property
    def ref(self) -> str:
        return f"{self.name}:v{self.version}"

    def to_json(self) -> dict[str, Any]:
        """The stable ``--json`` document of a version (see docs/cli.md)."""
        return {
            "name": self.name,
            "version": self.version,
            "ref": self.ref,
            "stage": self.stage,
            "path": str(self.path),
            "task": self.task,
            "base_model": self.base_model,
            "labels": self.labels,
            "test_metrics": self.metrics,
            "baseline_metrics": self.baselines,
            "parent": self.parent,
            "created_at": self.created_at.isoformat(),
        }

    @classmethod
    def _from_row(cls, row: ModelVersionRow) -> ModelVersion:
        return cls(
            name=row.name,
            version=row.version,
            stage=row.stage,
            path=Path(row.path),
            task=row.task,
            base_model=row.base_model,
            labels=list(row.labels),
            metrics=dict(row.metrics),
            baselines=dict(row.baselines),
            parent=row.parent,
            created_at=as_utc(row.created_at),
        )


class VersionInUseError(LmforgeError):
    """A version that cannot be archived or deleted as things stand: it is in production, or
    another version names it as its parent (the server answers 409)."""


@dataclass(frozen=True)
class StageChange:
    """A version after a stage change, and whether its stage actually changed."""

    version: ModelVersion
    changed: bool

    @property
    def ref(self) -> str:
        return self.version.ref

    @property
    def stage(self) -> str:
        return self.version.stage


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``name``, ``name:3``, ``name:v3``, ``name:production`` or ``name:latest``."""
    match = _REF.match(ref.strip())
    if not match:
        raise ModelNotFoundError(
            f"'{ref}' is not a model reference",
            "write NAME or NAME:VERSION, e.g. sentiment-en:v2 or sentiment-en:production",
        )
    return match["name"], match["version"]


class Registry:
    """The registered model versions of one lmforge home: :meth:`list`, :meth:`get` by
    reference (``NAME``, ``NAME:vN``, ``NAME:production``), :meth:`promote`, :meth:`archive`
    and :meth:`delete`; runs register through :meth:`register`. Opening one finishes any
    delete a crash interrupted."""

    def __init__(self, settings: Settings | None = None) -> None:
        settings = settings or get_settings()
        self.root = settings.registry_dir
        self.engine = make_engine(settings.resolved_database_url)
        tombstones.settle(self.root, self._has_row)  # finish any delete a crash interrupted

    def new_staging_dir(self) -> Path:
        """An invisible folder to build a version in; :meth:`register` moves it into place."""
        path = self.root / ".staging" / uuid.uuid4().hex
        path.mkdir(parents=True)
        return path

    def discard_staging(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def register(
        self,
        name: str,
        staging: Path,
        *,
        task: str,
        base_model: str,
        labels: list[str],
        metrics: dict[str, Any],
        baselines: dict[str, Any],
        stage: str = "candidate",
        parent: str | None = None,
        attempts: int = 5,
    ) -> ModelVersion:
        if not MODEL_NAME.match(name):
            raise ValueError(f"invalid model name {name!r}")  # recipes validate names first
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}")
        fields = {
            "task": task,
            "base_model": base_model,
            "labels": labels,
            "metrics": metrics,
            "baselines": baselines,
            "parent": parent,
        }
        for attempt in range(attempts):
            try:
                return self._register_once(name, staging, stage, fields)
            except IntegrityError:
                if attempt == attempts - 1:
                    raise  # another writer kept taking the number; give up loudly
        raise AssertionError("unreachable")

    def _register_once(
        self, name: str, staging: Path, stage: str, fields: dict[str, Any]
    ) -> ModelVersion:
        final: Path | None = None
        try:
            with Session(self.engine) as session, session.begin():
                latest = session.scalar(
                    select(func.max(ModelVersionRow.version)).where(ModelVersionRow.name == name)
                )
                version = (latest or 0) + 1
                final = self.root / name / f"v{version}"
                if final.exists():  # left by a crash before its row committed: not a version
                    shutil.rmtree(final)
                meta = {"name": name, "version": version, "task": fields["task"]}
                meta["base_model"] = fields["base_model"]
                (staging / "version.json").write_text(json.dumps(meta, indent=1))
                final.parent.mkdir(parents=True, exist_ok=True)
                staging.rename(final)
                if stage == "production":
                    self._archive_production(session, name)
                row = ModelVersionRow(
                    name=name, version=version, stage=stage, path=str(final), **fields
                )
                session.add(row)
                session.flush()
                result = ModelVersion._from_row(row)
            return result
        except BaseException:
            if final is not None and final.exists() and not staging.exists():
                final.rename(staging)  # the row did not commit: hand the folder back
            raise

    def list(self, name: str | None = None) -> list[ModelVersion]:
        query = select(ModelVersionRow).order_by(ModelVersionRow.name, ModelVersionRow.version)
        if name is not None:
            query = query.where(ModelVersionRow.name == name)
        with Session(self.engine) as session:
            return [ModelVersion._from_row(r) for r in session.scalars(query)]

    def get(self, ref: str) -> ModelVersion:
        """A version by reference; a bare name means its production version, else its latest."""
        name, version = parse_ref(ref)
        versions = self.list(name)
        if not versions:
            known = sorted({v.name for v in self.list()})
            raise ModelNotFoundError(
                f"no registered model named '{name}'",
                f"known models: {', '.join(known)}" if known else "train one with `lmforge run`",
            )
        if version in (None, "production"):
            production = [v for v in versions if v.stage == "production"]
            if production:
                return production[-1]
            if version == "production":
                raise ModelNotFoundError(
                    f"model '{name}' has no production version",
                    f"promote one with `lmforge models promote {name}:VERSION`",
                )
            return versions[-1]
        if version == "latest":
            return versions[-1]
        number = int(version.removeprefix("v"))
        for v in versions:
            if v.version == number:
                return v
        raise ModelNotFoundError(
            f"model '{name}' has no version {number}",
            f"versions: {', '.join(f'v{v.version}' for v in versions)}",
        )

    def promote(self, ref: str) -> StageChange:
        """Make a version the production one (archiving the previous one); ``changed`` is False
        when it already was, so a caller can say so instead of announcing a change."""
        was = self.get(ref).stage
        return StageChange(self.set_stage(ref, "production"), changed=was != "production")

    def set_stage(self, ref: str, stage: str) -> ModelVersion:
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}")
        target = self.get(ref)
        # One transaction: the row is read (and locked, where the database can) and every
        # stage it touches changes together, or none does.
        with Session(self.engine) as session, session.begin():
            row = session.scalar(
                select(ModelVersionRow)
                .where(ModelVersionRow.name == target.name)
                .where(ModelVersionRow.version == target.version)
                .with_for_update()
            )
            if row is None:  # removed since it was looked up
                raise ModelNotFoundError(
                    f"{target.ref} no longer exists", "see `lmforge models list`"
                )
            if stage == "production":
                self._archive_production(session, target.name)
            row.stage = stage
            session.flush()
            result = ModelVersion._from_row(row)
        return result

    def annotate(self, ref: str, key: str, value: Any) -> ModelVersion:
        """Set ``metrics[key]`` of a version to ``value`` (a JSON record about it, such as the
        retraining gate's decision, kept beside its test metrics), in one transaction."""
        target = self.get(ref)
        with Session(self.engine) as session, session.begin():
            row = session.scalar(
                select(ModelVersionRow)
                .where(ModelVersionRow.name == target.name)
                .where(ModelVersionRow.version == target.version)
                .with_for_update()
            )
            if row is None:
                raise ModelNotFoundError(
                    f"{target.ref} no longer exists", "see `lmforge models list`"
                )
            row.metrics = {**row.metrics, key: value}  # a new dict: JSON columns track assignment
            session.flush()
            result = ModelVersion._from_row(row)
        return result

    @staticmethod
    def _archive_production(session: Session, name: str) -> None:
        session.execute(
            update(ModelVersionRow)
            .where(ModelVersionRow.name == name)
            .where(ModelVersionRow.stage == "production")
            .values(stage="archived")
        )

    # --- archive and delete -----------------------------------------------------------------

    def archive(self, name: str, version: int) -> StageChange:
        """Move a version to the archived stage (``changed`` is False when it already was).
        The production version is refused: promote another one, which archives it."""
        target = self._version(name, version)
        if target.stage == "production":
            raise VersionInUseError(
                f"{target.ref} is in production, so it cannot be archived",
                f"promote another version of {name} first (that archives {target.ref})",
            )
        changed = target.stage != "archived"
        return StageChange(self.set_stage(target.ref, "archived"), changed=changed)

    def delete(self, name: str, version: int) -> ModelVersion:
        """Remove a version's folder and row as one step (a crash leaves both or neither) and
        return what was removed. Refuses the production version, and a version that another
        version names as its parent (a compressed child keeps its lineage)."""
        target = self._version(name, version)
        if target.stage == "production":
            raise VersionInUseError(
                f"{target.ref} is in production, so it cannot be deleted",
                f"promote another version of {name} first, then delete {target.ref}",
            )
        children = [v.ref for v in self.list() if v.parent == target.ref]
        if children:
            raise VersionInUseError(
                f"{target.ref} is the parent of {', '.join(children)}, so it cannot be deleted",
                f"delete {', '.join(children)} first",
            )
        with tombstones.graveyard_lock(self.root):
            tomb = tombstones.bury(
                self.root,
                target.path,
                name=name,
                version=version,
                created_at=target.created_at.isoformat(),
            )
            try:
                with Session(self.engine) as session, session.begin():
                    session.execute(
                        delete(ModelVersionRow)
                        .where(ModelVersionRow.name == name)
                        .where(ModelVersionRow.version == version)
                    )
            except BaseException:
                tombstones.restore(tomb)  # the row stays, so the folder comes back
                raise
            tombstones.remove(tomb)
        return target

    def _version(self, name: str, version: int) -> ModelVersion:
        return self.get(f"{name}:v{version}")

    def _has_row(self, tomb: tombstones.Tombstone) -> bool:
        """Whether the row a tombstone belonged to still exists (the same version number given
        to a later registration is another row: its creation time differs)."""
        with Session(self.engine) as session:
            row = session.scalar(
                select(ModelVersionRow)
                .where(ModelVersionRow.name == tomb.name)
                .where(ModelVersionRow.version == tomb.version)
            )
        return row is not None and as_utc(row.created_at).isoformat() == tomb.created_at
