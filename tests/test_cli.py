"""The CLI end to end, as a user runs it: real subprocesses, exit codes, stdout and stderr."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import lmforge, register_copy, toy_recipe
from lmforge.settings import Settings


def write_recipe(tmp_path: Path, recipe: dict[str, object], name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe))
    return path


def assert_clean_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def assert_registry_empty(settings: Settings) -> None:
    versions = list(settings.registry_dir.glob("*/v*")) if settings.registry_dir.exists() else []
    assert versions == []


@pytest.fixture
def trained(
    toy_csv: Path, tiny_base: Path, home: Settings, tmp_path: Path
) -> tuple[Path, dict[str, object]]:
    recipe = write_recipe(tmp_path, toy_recipe(toy_csv, tiny_base, epochs=4))
    result = lmforge("run", str(recipe), "--json")
    assert result.returncode == 0, result.stderr
    return recipe, json.loads(result.stdout)


def test_run_registers_a_version_with_its_artefacts(
    trained: tuple[Path, dict[str, object]],
) -> None:
    _, report = trained
    version = report["version"]
    assert isinstance(version, dict)
    assert version["ref"] == "toy:v1" and version["stage"] == "candidate"
    folder = Path(version["path"])
    for name in (
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "recipe.yaml",
        "metrics.json",
        "data_card.json",
        "data_card.md",
        "README.md",
        "confusion_matrix.png",
        "training_curve.png",
        "lmforge.json",
        "version.json",
    ):
        assert (folder / name).is_file(), name
    assert set(version["baseline_metrics"]) == {"majority", "tfidf_lr"}
    assert 0.0 <= version["test_metrics"]["accuracy"] <= 1.0


def test_models_list_show_promote_and_predict(trained: tuple[Path, dict[str, object]]) -> None:
    listed = json.loads(lmforge("models", "list", "--json").stdout)
    assert [v["ref"] for v in listed] == ["toy:v1"]
    shown = json.loads(lmforge("models", "show", "toy:v1", "--json").stdout)
    expected_keys = {"name", "version", "ref", "stage", "path", "task", "base_model", "labels"}
    assert expected_keys | {"test_metrics", "baseline_metrics"} <= set(shown)
    promoted = lmforge("models", "promote", "toy:v1")
    assert promoted.returncode == 0 and "production" in promoted.stdout
    assert json.loads(lmforge("models", "show", "toy", "--json").stdout)["stage"] == "production"
    predicted = lmforge("predict", "toy", "a wonderful film", "a dull mess", "--json")
    assert predicted.returncode == 0, predicted.stderr
    doc = json.loads(predicted.stdout)
    assert doc["model"] == "toy:v1"
    assert [p["text"] for p in doc["predictions"]] == ["a wonderful film", "a dull mess"]
    for p in doc["predictions"]:
        assert p["label"] in ("positive", "negative")
        assert abs(sum(p["scores"].values()) - 1.0) < 1e-4
    evaluated = json.loads(lmforge("evaluate", "toy:v1", "--json").stdout)
    assert evaluated["test_metrics"]["accuracy"] == shown["test_metrics"]["accuracy"]


def test_predict_reads_a_file(trained: tuple[Path, dict[str, object]], tmp_path: Path) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("great fun\n\nawful\n")
    doc = json.loads(lmforge("predict", "toy:v1", "--file", str(texts), "--json").stdout)
    assert [p["text"] for p in doc["predictions"]] == ["great fun", "awful"]


def test_schema_prints_the_json_schema() -> None:
    result = lmforge("schema")
    schema = json.loads(result.stdout)
    assert schema["title"] == "Recipe"
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize(
    ("change", "needles"),
    [
        ({"trainig": {}}, ["unknown key 'trainig'", "did you mean 'training'"]),
        ({"training": {"epoch": 2}}, ["unknown key 'training.epoch'", "'epochs'"]),
        ({"training": {"batch_size": "many"}}, ["training.batch_size", "'many'"]),
        ({"model": {"base": "gpt-17"}}, ["unknown encoder 'gpt-17'", "minilm-l6"]),
    ],
)
def test_bad_recipes_get_one_line_and_exit_2(
    change: dict[str, object],
    needles: list[str],
    toy_csv: Path,
    tiny_base: Path,
    home: Settings,
    tmp_path: Path,
) -> None:
    recipe = toy_recipe(toy_csv, tiny_base)
    recipe.update(change)
    assert_clean_error(lmforge("run", str(write_recipe(tmp_path, recipe))), *needles)
    assert_registry_empty(home)


def test_bad_data_gets_one_line_and_exit_2(
    toy_csv: Path, tiny_base: Path, home: Settings, tmp_path: Path
) -> None:
    cases: list[tuple[dict[str, object], list[str]]] = [
        ({"path": str(tmp_path / "nope.csv")}, ["nope.csv not found"]),
        (
            {"path": str(toy_csv), "text_column": "body", "label_column": "sentiment"},
            ["column 'body'", "review, sentiment"],
        ),
        (
            {"path": str(toy_csv), "text_column": "review", "label_column": "stars"},
            ["column 'stars'"],
        ),
    ]
    one_class = tmp_path / "one.csv"
    one_class.write_text("text,label\n" + "".join(f"row {i},good\n" for i in range(20)))
    cases.append(({"path": str(one_class)}, ["single label", "'good'"]))
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n   ,a\n\t,b\n")
    cases.append(({"path": str(empty)}, ["no rows left"]))
    for source, needles in cases:
        recipe = toy_recipe(toy_csv, tiny_base)
        recipe["data"] = {"source": source}
        assert_clean_error(lmforge("run", str(write_recipe(tmp_path, recipe))), *needles)
    assert_registry_empty(home)


def test_missing_recipe_and_unknown_models_get_one_line(home: Settings, tmp_path: Path) -> None:
    assert_clean_error(lmforge("run", str(tmp_path / "none.yaml")), "none.yaml not found")
    assert_clean_error(lmforge("predict", "ghost", "hello"), "no registered model named 'ghost'")
    assert_clean_error(lmforge("evaluate", "ghost:v3"), "ghost")
    assert_clean_error(lmforge("models", "show", "Bad Name!"), "not a model reference")


def test_unknown_version_lists_the_versions(trained: tuple[Path, dict[str, object]]) -> None:
    assert_clean_error(lmforge("predict", "toy:v9", "hi"), "no version 9", "v1")


def test_resume_errors_are_one_line(
    toy_csv: Path, tiny_base: Path, home: Settings, tmp_path: Path
) -> None:
    recipe = write_recipe(tmp_path, toy_recipe(toy_csv, tiny_base))
    empty_run = tmp_path / "run"
    empty_run.mkdir()
    assert_clean_error(lmforge("train", str(recipe), "--resume", str(empty_run)), "no checkpoint")
    assert_clean_error(
        lmforge("train", str(recipe), "--resume", str(tmp_path / "gone")), "not found"
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("nosuch",), "No such command 'nosuch'"),
        (("models", "nosuch"), "No such command 'nosuch'"),
        (("run", "--bogus"), "No such option: --bogus"),
        (("generate",), "Missing argument"),
    ],
)
def test_usage_errors_get_clicks_usage_line_and_exit_2(
    home: Settings, args: tuple[str, ...], needle: str
) -> None:
    result = lmforge(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert result.stderr.startswith("Usage: ")
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and needle in last, result.stderr


def test_no_command_prints_the_help(home: Settings) -> None:
    result = lmforge()
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "Usage:" in result.stdout and "Commands" in result.stdout


def test_debug_shows_the_traceback(home: Settings, tmp_path: Path) -> None:
    result = lmforge("--debug", "run", str(tmp_path / "none.yaml"))
    assert result.returncode != 0
    assert "Traceback" in result.stderr


def test_compress_registers_a_child_version_served_by_its_backend(
    trained: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    recipe, _ = trained
    raw = yaml.safe_load(recipe.read_text())
    raw["compress"] = {
        "structures": ["original"],
        "formats": ["onnx-fp32", "onnx-int8-per-channel"],
        "max_accuracy_drop": 100,
        "bench_batch_size": 8,
        "bench_length": 16,
        "bench_seconds": 0.05,
        "latency_runs": 3,
    }
    compressed = lmforge(
        "compress", "toy:v1", "--recipe", str(write_recipe(tmp_path, raw, "c.yaml")), "--json"
    )
    assert compressed.returncode == 0, compressed.stderr
    doc = json.loads(compressed.stdout)
    assert doc["source"] == "toy:v1" and doc["reference"] == "original/torch-fp32"
    assert [v["name"] for v in doc["variants"]] == [
        "original/torch-fp32",
        "original/onnx-fp32",
        "original/onnx-int8-per-channel",
    ]
    assert doc["version"]["ref"] == "toy:v2" and doc["version"]["parent"] == "toy:v1"
    backend = "onnx-int8" if "int8" in doc["chosen"] else "onnx-fp32"
    predicted = json.loads(lmforge("predict", "toy:v2", "fine", "--json").stdout)
    assert predicted["backend"] == backend
    on_torch = json.loads(
        lmforge("predict", "toy:v2", "fine", "--backend", "torch-fp32", "--json").stdout
    )
    assert on_torch["backend"] == "torch-fp32"
    evaluated = json.loads(lmforge("evaluate", "toy:v2", "--json").stdout)
    assert evaluated["backend"] == backend
    table = lmforge("compress", "toy:v1", "--recipe", str(tmp_path / "c.yaml"))
    assert table.returncode == 0 and "registered toy:v3" in table.stdout


def test_compress_bad_input_gets_one_line(
    trained: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    recipe, _ = trained
    raw = yaml.safe_load(recipe.read_text())
    raw["compress"] = {"max_accuracy_drop": -1}
    bad = write_recipe(tmp_path, raw, "bad.yaml")
    assert_clean_error(lmforge("compress", "toy:v1", "--recipe", str(bad)), "max_accuracy_drop")
    assert_clean_error(lmforge("compress", "nosuch"), "no registered model named 'nosuch'")
    assert_clean_error(
        lmforge("predict", "toy:v1", "x", "--backend", "onnx-int8"),
        "'onnx-int8' is not available",
    )


def test_keys_create_list_revoke(home: Settings) -> None:
    created = lmforge("keys", "create", "--name", "ci", "--scope", "predict", "--scope", "admin")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip().splitlines()[-1]
    assert secret.startswith("lmf_")
    listed = json.loads(lmforge("keys", "list", "--json").stdout)
    assert [(k["name"], k["scopes"], k["revoked_at"]) for k in listed] == [
        ("ci", ["predict", "admin"], None)
    ]
    assert secret not in lmforge("keys", "list").stdout  # never shown again
    assert secret[:12] == listed[0]["prefix"]
    revoked = lmforge("keys", "revoke", "ci")
    assert revoked.returncode == 0 and "revoked key 'ci'" in revoked.stdout
    assert json.loads(lmforge("keys", "list", "--json").stdout)[0]["revoked_at"] is not None
    assert_clean_error(lmforge("keys", "revoke", "ci"), "no active API key named 'ci'")
    assert_clean_error(
        lmforge("keys", "create", "--name", "x", "--scope", "write"), "unknown scope write"
    )


def test_serve_refuses_bad_settings_before_listening(home: Settings, tmp_path: Path) -> None:
    assert_clean_error(
        lmforge("serve", "--no-auth", "--host", "0.0.0.0"), "only on a loopback host"
    )
    config = tmp_path / "serve.yaml"
    config.write_text("batching: {max_wait: 3}\n")
    assert_clean_error(
        lmforge("serve", "--config", str(config)), "unknown key 'batching.max_wait'", "max_wait_ms"
    )
    assert_clean_error(lmforge("serve", "--config", str(tmp_path / "none.yaml")), "not found")


def test_app_assistant_answers_cites_and_refuses(home: Settings, tmp_path: Path) -> None:
    faq = tmp_path / "faq.csv"
    faq.write_text(
        "question,answer\nHow do I reset my password?,Open Settings and choose Reset.\n"
        "How do I cancel my plan?,Go to Billing and press Cancel.\n"
    )
    result = lmforge(
        "app", "assistant", "--faq", str(faq), "--encoder", "minilm-l6", "--threshold", "0.5",
        "--json", "how can I reset the password", "best pizza in Naples?",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    answered, refused = json.loads(result.stdout)
    assert answered["answered"] and answered["citation"] == "faq.csv row 1"
    assert not refused["answered"]
    empty = tmp_path / "empty.csv"
    empty.write_text("question,answer\n")
    assert_clean_error(lmforge("app", "assistant", "--faq", str(empty), "q?"), "has no entries")


def test_generate_says_when_the_answer_was_cut_at_max_tokens(tiny_decoder_dir: Path) -> None:
    args = ("hello", "--model", str(tiny_decoder_dir), "--weights", "fp32", "--temperature", "0")
    cut = json.loads(lmforge("generate", *args, "--max-tokens", "4", "--json").stdout)
    assert cut["finish_reason"] == "length" and cut["text"]
    streamed = lmforge("generate", *args, "--max-tokens", "4")
    assert streamed.returncode == 0, streamed.stderr
    assert streamed.stdout == cut["text"] + "\n"
    note = "[stopped at --max-tokens 4; raise it for a longer answer]"
    # stderr: what loading the decoder does (no silent wait), then the note, once, last
    lines = streamed.stderr.strip().splitlines()
    assert lines[-1] == note and lines.count(note) == 1
    assert any(line.startswith("loading ") for line in lines[:-1])
    # stopped by a stop string, or asked for JSON: nothing is added
    stop = ("--stop", cut["text"][0])
    stopped = json.loads(lmforge("generate", *args, "--max-tokens", "4", *stop, "--json").stdout)
    assert stopped["finish_reason"] == "stop"
    assert note not in lmforge("generate", *args, "--max-tokens", "4", *stop).stderr
    assert note not in lmforge("generate", *args, "--max-tokens", "4", "--json").stderr


def test_promote_archive_and_delete_say_what_changed(
    trained: tuple[Path, dict[str, object]], home: Settings
) -> None:
    _, report = trained
    version = report["version"]
    assert isinstance(version, dict)
    assert register_copy(home, Path(version["path"]), "toy") == "toy:v2"
    first = lmforge("models", "promote", "toy:v1")
    assert first.returncode == 0 and "toy:v1 is now in production" in first.stdout
    again = lmforge("models", "promote", "toy:v1")
    assert again.returncode == 0 and "toy:v1 is already in production" in again.stdout
    assert_clean_error(lmforge("models", "archive", "toy:v1"), "in production")
    assert_clean_error(lmforge("models", "delete", "toy:v1"), "in production")
    assert "toy:v2 archived" in lmforge("models", "archive", "toy:v2").stdout
    assert "toy:v2 is already archived" in lmforge("models", "archive", "toy:v2").stdout
    folder = home.registry_dir / "toy" / "v2"
    assert folder.is_dir()
    deleted = lmforge("models", "delete", "toy:v2")
    assert deleted.returncode == 0 and "deleted toy:v2" in deleted.stdout
    assert not folder.exists()
    assert [v["ref"] for v in json.loads(lmforge("models", "list", "--json").stdout)] == ["toy:v1"]


def test_recipe_init_writes_a_recipe_run_accepts(tmp_path: Path) -> None:
    from lmforge.recipe import load_recipe

    target = tmp_path / "start.yaml"
    written = lmforge("recipe", "init", "classification", "-o", str(target))
    assert written.returncode == 0, written.stderr
    assert load_recipe(target).task == "classification"
    assert_clean_error(lmforge("recipe", "init", "classification", "-o", str(target)), "--force")
    assert lmforge("recipe", "init", "classification", "-o", str(target), "--force").returncode == 0
    printed = lmforge("recipe", "init", "generation")
    assert printed.returncode == 0 and "task: generation" in printed.stdout
    assert_clean_error(lmforge("recipe", "init", "poetry"), "unknown task 'poetry'")
