"""The model registry: numbering, references, stages, atomic registration and the model card."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete as sql_delete
from sqlalchemy import event, func, select
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session

from lmforge.errors import LmforgeError, ModelNotFoundError
from lmforge.recipe import parse_recipe
from lmforge.registry import STAGES, ModelVersion, Registry, parse_ref, tombstones
from lmforge.registry.card import model_card
from lmforge.registry.db import ModelVersionRow
from lmforge.settings import Settings

METRICS = {"accuracy": 0.9, "macro_f1": 0.88, "loss": 0.3, "n": 100}
BASELINES = {"majority": {"accuracy": 0.55, "macro_f1": 0.35}}


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.delenv("LMFORGE_DATABASE_URL", raising=False)
    monkeypatch.setenv("LMFORGE_HOME", str(tmp_path / "env-home"))  # never the user's home
    return Settings(home=tmp_path / "home")


@pytest.fixture
def registry(settings: Settings) -> Iterator[Registry]:
    reg = Registry(settings)
    yield reg
    reg.engine.dispose()


def _staging(registry: Registry, content: str = "weights") -> Path:
    staging = registry.new_staging_dir()
    (staging / "model.bin").write_text(content, encoding="utf-8")
    return staging


def _register(
    registry: Registry,
    name: str = "demo",
    content: str = "weights",
    staging: Path | None = None,
    **kwargs: Any,
) -> ModelVersion:
    """Register with default fields; ``staging`` reuses a folder the test wants to inspect."""
    options: dict[str, Any] = {
        "task": "classification",
        "base_model": "minilm-l6",
        "labels": ["negative", "positive"],
        "metrics": METRICS,
        "baselines": BASELINES,
    }
    options.update(kwargs)
    return registry.register(name, staging or _staging(registry, content), **options)


def _row_count(registry: Registry, name: str) -> int:
    with Session(registry.engine) as session:
        query = (
            select(func.count()).select_from(ModelVersionRow).where(ModelVersionRow.name == name)
        )
        return int(session.scalar(query) or 0)


# --- parse_ref ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("demo", ("demo", None)),
        ("demo:3", ("demo", "3")),
        ("demo:v3", ("demo", "v3")),
        ("demo:production", ("demo", "production")),
        ("demo:latest", ("demo", "latest")),
        (" sentiment-en.v2_x:v12 ", ("sentiment-en.v2_x", "v12")),
    ],
)
def test_parse_ref(ref: str, expected: tuple[str, str | None]) -> None:
    assert parse_ref(ref) == expected


@pytest.mark.parametrize(
    "ref", ["", "Demo", "demo:", "demo:x1", "demo:v", "demo:1:2", "-demo", "a b"]
)
def test_parse_ref_rejects(ref: str) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        parse_ref(ref)
    assert "not a model reference" in str(info.value)
    assert "NAME:VERSION" in str(info.value)


# --- registering -------------------------------------------------------------------------------


def test_sqlite_file_created_under_home(settings: Settings, registry: Registry) -> None:
    assert (settings.home / "lmforge.db").is_file()
    assert registry.root == settings.home / "registry"
    assert str(settings.home) in str(registry.engine.url)


def test_staging_dir_is_hidden_and_unique(registry: Registry) -> None:
    a, b = registry.new_staging_dir(), registry.new_staging_dir()
    assert a != b
    assert a.is_dir() and b.is_dir()
    assert a.parent == registry.root / ".staging"
    registry.discard_staging(a)
    assert not a.exists()
    registry.discard_staging(a)  # twice is fine


def test_register_numbers_versions(registry: Registry) -> None:
    first = _register(registry, content="one")
    second = _register(registry, content="two")
    other = _register(registry, name="other")
    assert (first.version, second.version, other.version) == (1, 2, 1)
    assert first.ref == "demo:v1"
    assert second.ref == "demo:v2"
    assert first.path == registry.root / "demo" / "v1"
    assert (first.path / "model.bin").read_text(encoding="utf-8") == "one"
    assert (second.path / "model.bin").read_text(encoding="utf-8") == "two"
    meta = json.loads((second.path / "version.json").read_text(encoding="utf-8"))
    assert meta == {
        "name": "demo",
        "version": 2,
        "task": "classification",
        "base_model": "minilm-l6",
    }
    assert first.stage == "candidate"
    assert first.labels == ["negative", "positive"]
    assert first.metrics == METRICS
    assert first.baselines == BASELINES
    assert list((registry.root / ".staging").iterdir()) == []  # moved, not copied
    assert [v.ref for v in registry.list()] == ["demo:v1", "demo:v2", "other:v1"]
    assert [v.ref for v in registry.list("demo")] == ["demo:v1", "demo:v2"]
    assert registry.list("nobody") == []


def test_register_stores_parent(registry: Registry) -> None:
    first = _register(registry)
    child = _register(registry, parent=first.ref)
    assert child.parent == "demo:v1"
    assert registry.get("demo:v2").parent == "demo:v1"
    assert registry.get("demo:v1").parent is None


def test_stale_folder_without_row_is_replaced(registry: Registry) -> None:
    stale = registry.root / "demo" / "v1"
    stale.mkdir(parents=True)
    (stale / "junk.txt").write_text("left by a crash", encoding="utf-8")
    version = _register(registry)
    assert version.version == 1
    assert not (version.path / "junk.txt").exists()
    assert (version.path / "model.bin").is_file()


def test_to_json_has_stable_keys(registry: Registry) -> None:
    doc = _register(registry, parent="base:v1").to_json()
    assert list(doc) == [
        "name",
        "version",
        "ref",
        "stage",
        "path",
        "task",
        "base_model",
        "labels",
        "test_metrics",
        "baseline_metrics",
        "parent",
        "created_at",
    ]
    assert doc["ref"] == "demo:v1"
    assert doc["version"] == 1
    assert doc["test_metrics"] == METRICS
    assert doc["baseline_metrics"] == BASELINES
    assert doc["path"] == str(registry.root / "demo" / "v1")
    datetime.fromisoformat(doc["created_at"])
    json.dumps(doc)  # serialisable as is
    assert json.dumps(registry.get("demo").to_json())


def test_created_at_same_from_register_and_get(registry: Registry) -> None:
    registered = _register(registry)
    fetched = registry.get("demo:v1")
    assert fetched.created_at.tzinfo is not None
    assert fetched.to_json()["created_at"] == registered.to_json()["created_at"]
    assert fetched == registered


# --- references --------------------------------------------------------------------------------


def test_get_by_reference(registry: Registry) -> None:
    _register(registry)
    _register(registry)
    assert registry.get("demo").version == 2  # no production: latest
    assert registry.get("demo:v1").version == 1
    assert registry.get("demo:1").version == 1
    assert registry.get("demo:2").version == 2
    assert registry.get("demo:latest").version == 2
    with pytest.raises(ModelNotFoundError) as info:
        registry.get("demo:production")
    assert "no production version" in str(info.value)
    assert "promote" in str(info.value)


def test_bare_name_prefers_production(registry: Registry) -> None:
    _register(registry)
    _register(registry)
    _register(registry)
    registry.promote("demo:v2")
    assert registry.get("demo").version == 2
    assert registry.get("demo:production").version == 2
    assert registry.get("demo:latest").version == 3


def test_unknown_name_lists_known_models(registry: Registry) -> None:
    _register(registry, name="alpha")
    _register(registry, name="beta")
    with pytest.raises(ModelNotFoundError) as info:
        registry.get("gamma")
    message = str(info.value)
    assert "no registered model named 'gamma'" in message
    assert "alpha, beta" in message


def test_unknown_name_on_empty_registry(registry: Registry) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        registry.get("demo")
    assert "lmforge run" in str(info.value)


def test_unknown_version_lists_versions(registry: Registry) -> None:
    _register(registry)
    _register(registry)
    for ref in ("demo:v7", "demo:7", "demo:0"):
        with pytest.raises(ModelNotFoundError) as info:
            registry.get(ref)
        message = str(info.value)
        assert "has no version" in message
        assert "v1, v2" in message


def test_invalid_reference(registry: Registry) -> None:
    with pytest.raises(ModelNotFoundError, match="not a model reference"):
        registry.get("Demo:v1")
    with pytest.raises(ModelNotFoundError, match="not a model reference"):
        registry.get("demo:beta")


# --- stages ------------------------------------------------------------------------------------


def test_promote_archives_previous_production(registry: Registry) -> None:
    _register(registry)
    _register(registry)
    _register(registry)
    promoted = registry.promote("demo:v1")
    assert promoted.stage == "production"
    promoted = registry.promote("demo:2")
    assert promoted.stage == "production"
    stages = {v.version: v.stage for v in registry.list("demo")}
    assert stages == {1: "archived", 2: "production", 3: "candidate"}
    assert registry.get("demo:production").version == 2


def test_promote_does_not_touch_other_models(registry: Registry) -> None:
    _register(registry, name="alpha")
    _register(registry, name="beta")
    registry.promote("alpha:v1")
    registry.promote("beta:v1")
    assert registry.get("alpha:v1").stage == "production"
    assert registry.get("beta:v1").stage == "production"


def test_promote_same_version_twice(registry: Registry) -> None:
    _register(registry)
    registry.promote("demo:v1")
    assert registry.promote("demo:v1").stage == "production"
    assert [v.stage for v in registry.list("demo")] == ["production"]


def test_promoting_a_version_removed_after_its_lookup_changes_nothing(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    _register(registry, stage="production")
    stale = _register(registry)
    with Session(registry.engine) as session, session.begin():  # removed by another writer
        session.delete(session.scalars(select(ModelVersionRow).filter_by(version=2)).one())
    monkeypatch.setattr(registry, "get", lambda ref: stale)  # ... after promote looked it up
    with pytest.raises(ModelNotFoundError, match="demo:v2 no longer exists"):
        registry.promote("demo:v2")
    assert [v.stage for v in registry.list("demo")] == ["production"]  # not archived


def test_register_as_production_archives_previous(registry: Registry) -> None:
    _register(registry, stage="production")
    second = _register(registry, stage="production")
    assert second.stage == "production"
    assert [v.stage for v in registry.list("demo")] == ["archived", "production"]


def test_set_stage(registry: Registry) -> None:
    _register(registry)
    assert registry.set_stage("demo:v1", "archived").stage == "archived"
    with pytest.raises(ValueError, match="stage must be one of"):
        registry.set_stage("demo:v1", "staging")
    assert STAGES == ("candidate", "production", "archived")
    with pytest.raises(ModelNotFoundError):
        registry.promote("demo:v9")


# --- sharing and atomicity ---------------------------------------------------------------------


def test_second_registry_sees_versions(settings: Settings, registry: Registry) -> None:
    _register(registry)
    other = Registry(Settings(home=settings.home))
    try:
        assert [v.ref for v in other.list()] == ["demo:v1"]
        version = other.register(
            "demo",
            _staging(other),
            task="classification",
            base_model="m",
            labels=["a", "b"],
            metrics={},
            baselines={},
        )
        assert version.version == 2
        other.promote("demo:v2")
    finally:
        other.engine.dispose()
    assert registry.get("demo").version == 2
    assert registry.get("demo").stage == "production"


def test_explicit_database_url(tmp_path: Path) -> None:
    db = tmp_path / "elsewhere" / "reg.db"
    settings = Settings(home=tmp_path / "home", database_url=f"sqlite:///{db}")
    reg = Registry(settings)
    try:
        _register(reg)
        assert db.is_file()
        assert not (tmp_path / "home" / "lmforge.db").exists()
    finally:
        reg.engine.dispose()


def _assert_nothing_registered(registry: Registry, staging: Path, name: str = "demo") -> None:
    assert _row_count(registry, name) == 0
    assert registry.list(name) == []
    assert not (registry.root / name / "v1").exists()
    assert staging.is_dir(), "the staging folder is handed back"
    assert (staging / "model.bin").read_text(encoding="utf-8") == "weights"


def test_failed_insert_leaves_nothing(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self: Session, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("database went away")

    monkeypatch.setattr(Session, "flush", boom)
    staging = _staging(registry)
    with pytest.raises(RuntimeError, match="database went away"):
        _register(registry, staging=staging, labels=["a"], metrics={})
    monkeypatch.undo()
    _assert_nothing_registered(registry, staging)
    with pytest.raises(ModelNotFoundError):
        registry.get("demo")
    # the handed-back folder can still be registered
    version = _register(registry, staging=staging, labels=["a"], metrics={})
    assert version.version == 1
    assert (version.path / "model.bin").is_file()


def test_unserialisable_metrics_leave_nothing(registry: Registry) -> None:
    staging = _staging(registry)
    with pytest.raises(StatementError):
        _register(registry, staging=staging, labels=["a"], metrics={"accuracy": object()})
    _assert_nothing_registered(registry, staging)


def test_failed_commit_leaves_nothing(registry: Registry) -> None:
    def boom(conn: Any) -> None:
        raise RuntimeError("commit failed")

    _register(registry, stage="production")
    event.listen(registry.engine, "commit", boom)
    staging = _staging(registry)
    try:
        with pytest.raises(RuntimeError, match="commit failed"):
            _register(registry, staging=staging, labels=["a"], metrics={}, stage="production")
    finally:
        event.remove(registry.engine, "commit", boom)
    assert [(v.version, v.stage) for v in registry.list("demo")] == [(1, "production")]
    assert not (registry.root / "demo" / "v2").exists()
    assert staging.is_dir()
    assert (registry.root / "demo" / "v1" / "model.bin").is_file()


def test_failed_production_register_keeps_previous_production(registry: Registry) -> None:
    _register(registry, stage="production")
    staging = _staging(registry)
    with pytest.raises(StatementError):
        _register(
            registry, staging=staging, labels=["a"], metrics={"x": {1, 2}}, stage="production"
        )
    assert registry.get("demo:production").version == 1
    assert staging.is_dir()


def test_number_taken_by_another_writer_is_retried(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_flush = Session.flush
    calls = {"n": 0}

    def flaky(self: Session, *args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed"))
        real_flush(self, *args, **kwargs)

    monkeypatch.setattr(Session, "flush", flaky)
    version = _register(registry)
    assert calls["n"] >= 2
    assert version.version == 1
    assert (version.path / "model.bin").is_file()
    assert list((registry.root / ".staging").iterdir()) == []


def test_gives_up_after_attempts(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    def always(self: Session, *args: Any, **kwargs: Any) -> None:
        raise IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed"))

    monkeypatch.setattr(Session, "flush", always)
    staging = _staging(registry)
    with pytest.raises(IntegrityError):
        _register(registry, staging=staging, labels=[], metrics={}, attempts=3)
    monkeypatch.undo()
    _assert_nothing_registered(registry, staging)


# --- model card --------------------------------------------------------------------------------


def _card_inputs() -> dict[str, Any]:
    recipe = parse_recipe(
        {
            "name": "demo",
            "description": "Demo sentiment model.",
            "data": {"source": {"builtin": "rotten_tomatoes"}},
        }
    )
    metrics = {
        "accuracy": 0.9,
        "macro_f1": 0.875,
        "roc_auc": 0.95,
        "per_class": {
            "negative": {"precision": 0.8, "recall": 0.9, "f1": 0.85, "support": 40},
            "positive": {"precision": 0.95, "recall": 0.9, "f1": 0.9, "support": 60},
        },
    }
    baselines = {
        "majority": {"accuracy": 0.6, "macro_f1": 0.375},
        "tfidf_lr": {"accuracy": 0.75, "macro_f1": 0.74, "roc_auc": 0.8},
    }
    card = {
        "labels": ["negative", "positive"],
        "source": "rotten_tomatoes",
        "rows_raw": 120,
        "rows_used": 100,
    }
    training = {
        "steps": 30,
        "precision": "fp32",
        "stopped_early": True,
        "trainable_parameters": 1234567,
        "total_parameters": 22713216,
    }
    return {
        "recipe": recipe,
        "card": card,
        "metrics": metrics,
        "baselines": baselines,
        "training": training,
        "base_name": "sentence-transformers/all-MiniLM-L6-v2",
    }


def test_model_card_table() -> None:
    text = model_card(**_card_inputs())
    assert text.startswith("# demo\n")
    assert "Demo sentiment model." in text
    assert "| model | accuracy | macro-F1 | ROC-AUC |" in text
    assert "| this model | 90.00 | 87.50 | 95.00 |" in text
    assert "| majority | 60.00 | 37.50 | — |" in text
    assert "| tfidf_lr | 75.00 | 74.00 | 80.00 |" in text
    assert "| negative | 80.00 | 90.00 | 85.00 | 40 |" in text
    assert "| positive | 95.00 | 90.00 | 90.00 | 60 |" in text
    assert "labels: negative, positive" in text
    assert "`sentence-transformers/all-MiniLM-L6-v2`" in text
    assert "full fine-tuning" in text
    assert "30 steps" in text
    assert "(stopped early)" in text
    assert "1,234,567 of 22,713,216" in text
    assert "120 rows, 100 used" in text
    lines = text.splitlines()
    start = lines.index("| model | accuracy | macro-F1 | ROC-AUC |")
    assert lines[start + 2].startswith("| this model |")  # the model comes before its baselines


def test_model_card_lora_and_registry_name() -> None:
    inputs = _card_inputs()
    inputs["recipe"] = parse_recipe(
        {
            "name": "demo",
            "data": {"source": {"builtin": "rotten_tomatoes"}},
            "adaptation": {"method": "lora", "lora": {"r": 8, "target_modules": ["query"]}},
            "registry": {"name": "demo-lora"},
        }
    )
    inputs["training"] = {**inputs["training"], "stopped_early": False}
    text = model_card(**inputs)
    assert text.startswith("# demo-lora\n")
    assert "LoRA (r=8" in text
    assert "targets query" in text
    assert "stopped early" not in text
    assert "A classification model trained by lmforge." in text


# --- promote says whether anything changed; archive and delete --------------------------------


def test_promote_tells_whether_the_stage_changed(registry: Registry) -> None:
    _register(registry)
    first = registry.promote("demo:v1")
    assert first.changed and first.stage == "production" and first.ref == "demo:v1"
    again = registry.promote("demo:v1")
    assert not again.changed and again.version.stage == "production"


def test_archive_moves_a_candidate_and_refuses_production(registry: Registry) -> None:
    _register(registry)
    _register(registry)
    registry.promote("demo:v2")
    archived = registry.archive("demo", 1)
    assert archived.changed and archived.stage == "archived"
    assert not registry.archive("demo", 1).changed
    with pytest.raises(LmforgeError, match=r"demo:v2 is in production.*promote another version"):
        registry.archive("demo", 2)
    assert registry.get("demo:v2").stage == "production"


def test_delete_removes_folder_and_row(registry: Registry) -> None:
    _register(registry)
    second = _register(registry)
    removed = registry.delete("demo", 2)
    assert removed.ref == "demo:v2"
    assert not second.path.exists() and _row_count(registry, "demo") == 1
    assert not list((registry.root / tombstones.TOMBSTONES).iterdir())
    with pytest.raises(ModelNotFoundError, match="has no version 2"):
        registry.delete("demo", 2)


def test_delete_refuses_production_and_parents(registry: Registry) -> None:
    _register(registry)
    _register(registry, parent="demo:v1")
    registry.promote("demo:v2")
    with pytest.raises(LmforgeError, match=r"demo:v2 is in production"):
        registry.delete("demo", 2)
    with pytest.raises(LmforgeError, match=r"demo:v1 is the parent of demo:v2.*delete demo:v2"):
        registry.delete("demo", 1)
    assert _row_count(registry, "demo") == 2
    assert registry.get("demo:v1").path.is_dir() and registry.get("demo:v2").path.is_dir()


def test_a_failed_row_delete_puts_the_folder_back(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = _register(registry)

    def fail(*_: Any, **__: Any) -> None:
        raise RuntimeError("database went away")

    monkeypatch.setattr(Session, "execute", fail)
    with pytest.raises(RuntimeError, match="went away"):
        registry.delete("demo", 1)
    monkeypatch.undo()
    assert (version.path / "model.bin").read_text(encoding="utf-8") == "weights"
    assert _row_count(registry, "demo") == 1


def test_opening_the_registry_finishes_an_interrupted_delete(
    settings: Settings, registry: Registry
) -> None:
    kept, gone = _register(registry), _register(registry)
    # A crash after burying both folders; only gone's row delete committed.
    for v in (kept, gone):
        tombstones.bury(
            registry.root,
            v.path,
            name=v.name,
            version=v.version,
            created_at=v.created_at.isoformat(),
        )
    with Session(registry.engine) as session, session.begin():
        session.execute(sql_delete(ModelVersionRow).where(ModelVersionRow.version == 2))
    assert not kept.path.exists()

    reopened = Registry(settings)
    try:
        assert (kept.path / "model.bin").is_file() and not gone.path.exists()
        assert [v.ref for v in reopened.list()] == ["demo:v1"]
        assert not list((registry.root / tombstones.TOMBSTONES).iterdir())
    finally:
        reopened.engine.dispose()


def test_a_tombstone_is_not_restored_into_a_later_version_of_the_same_number(
    settings: Settings, registry: Registry
) -> None:
    _register(registry)
    old = _register(registry)
    tombstones.bury(
        registry.root, old.path, name="demo", version=2, created_at=old.created_at.isoformat()
    )
    with Session(registry.engine) as session, session.begin():
        session.execute(sql_delete(ModelVersionRow).where(ModelVersionRow.version == 2))
    new = _register(registry, content="new weights")  # takes the number 2 again
    Registry(settings).engine.dispose()
    assert (new.path / "model.bin").read_text(encoding="utf-8") == "new weights"
    assert not list((registry.root / tombstones.TOMBSTONES).iterdir())
