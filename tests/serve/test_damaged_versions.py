"""A damaged version folder never answers 500 nor stops the server: each bad value in
lmforge.json or the tokenizer files is a 503 model_unavailable naming the file, the other models
serve, and the version loads again once its files are fixed (on the next request, or through
the admin reload route), without a restart."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import LiveServer, register_copy, serve_config
from lmforge.registry import Registry
from lmforge.serve import KeyStore
from lmforge.settings import Settings


def _meta(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "lmforge.json").read_text())
    return data


def _set(key: str, value: Any) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        (folder / "lmforge.json").write_text(json.dumps({**_meta(folder), key: value}))

    return damage


def _whole_file(text: str) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        (folder / "lmforge.json").write_text(text)

    return damage


def _garbage_tokenizer_config(folder: Path) -> None:
    (folder / "tokenizer_config.json").write_bytes(b"\x89garbage{{ not json")


def _bad_config_value(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_size": "abc"}))


# name -> (how the folder is damaged, the file the one-line reason must name)
DAMAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "max-length-abc": (_set("max_length", "abc"), "lmforge.json"),
    "max-length-negative": (_set("max_length", -1), "lmforge.json"),
    "labels-mismatch": (_set("labels", ["a", "b", "c"]), "lmforge.json"),
    "labels-empty": (_set("labels", []), "lmforge.json"),
    "labels-duplicate": (_set("labels", ["a", "a"]), "lmforge.json"),
    "cleaning-not-a-block": (_set("cleaning", "yes"), "lmforge.json"),
    "cleaning-bad-value": (_set("cleaning", {"max_chars": -5}), "lmforge.json"),
    "empty-array": (_whole_file("[]"), "lmforge.json"),
    "array": (_whole_file('[{"task": "classification"}]'), "lmforge.json"),
    "tokenizer-config": (_garbage_tokenizer_config, "tokenizer_config.json"),
    "config-value": (_bad_config_value, "config.json"),
}


@pytest.fixture(scope="module")
def site(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One server preloading a good model and one damaged version per kind of damage."""
    settings = Settings(home=tmp_path_factory.mktemp("damaged-home"), database_url=None)
    register_copy(settings, tiny_model_dir, "tiny", stage="production")
    registry = Registry(settings)
    for name, (damage, _) in DAMAGES.items():
        damage(registry.get(register_copy(settings, tiny_model_dir, name, "production")).path)
    for name in ("fixed-later", "reloaded"):
        ref = register_copy(settings, tiny_model_dir, name, "production")
        _set("labels", ["x", "y", "z"])(registry.get(ref).path)
    staging = registry.new_staging_dir()  # a decoder: served only from the config
    (staging / "lmforge.json").write_text(json.dumps({"task": "generation", "max_length": 8}))
    registry.register(
        "chat", staging, task="generation", base_model="x", labels=[], metrics={}, baselines={}
    )
    store = KeyStore(registry.engine)
    keys = {scope: store.create(scope, [scope])[1] for scope in ("predict", "admin")}
    config = serve_config(models=["tiny", *DAMAGES, "fixed-later", "reloaded"])
    with LiveServer(config, settings) as server:  # starts although most versions are damaged
        server.keys = keys
        server.settings = settings
        yield server


def call(site: Any, path: str, scope: str = "predict", **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {site.keys[scope]}"}
    return httpx.post(site.url + path, headers=headers, timeout=60, **kw)


def predict(site: Any, model: str) -> httpx.Response:
    return call(site, "/v1/predict", json={"model": model, "inputs": ["a fine film"]})


def assert_unavailable(response: httpx.Response, *needles: str) -> None:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "model_unavailable"
    assert "\n" not in error["message"]
    for needle in needles:
        assert needle in error["message"], error["message"]


@pytest.mark.parametrize("name", list(DAMAGES))
def test_each_damage_is_503_naming_the_file_while_others_serve(site: Any, name: str) -> None:
    _, file = DAMAGES[name]
    for ref in (name, f"{name}:v1"):  # the bare name and the pinned version alike
        assert_unavailable(predict(site, ref), name, file)
    assert predict(site, "tiny").status_code == 200


def test_the_server_started_and_lists_what_is_unavailable(site: Any) -> None:
    ready = httpx.get(site.url + "/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["models"] == {"tiny": "tiny:v1"}
    headers = {"Authorization": f"Bearer {site.keys['predict']}"}
    shown = httpx.get(site.url + "/v1/models/labels-mismatch", headers=headers, timeout=10).json()
    (version,) = shown["versions"]
    assert not version["loaded"] and "3 labels" in version["load_error"]
    healthy = httpx.get(site.url + "/v1/models/tiny", headers=headers, timeout=10).json()
    assert healthy["versions"][0]["load_error"] is None


def test_a_fixed_version_loads_on_the_next_request(site: Any, tiny_model_dir: Path) -> None:
    assert_unavailable(predict(site, "fixed-later"), "3 labels", "lmforge.json")
    folder = Registry(site.settings).get("fixed-later").path
    (folder / "lmforge.json").write_text(json.dumps(_meta(tiny_model_dir)))
    answer = predict(site, "fixed-later")
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == "fixed-later:v1"
    assert answer.json()["predictions"][0]["label"] in ("negative", "positive")


def test_the_admin_reload_route(site: Any, tiny_model_dir: Path) -> None:
    route = "/v1/models/reloaded/versions/1/reload"
    assert call(site, route, scope="predict").status_code == 403  # admin only
    assert_unavailable(call(site, route, scope="admin"), "3 labels", "lmforge.json")
    folder = Registry(site.settings).get("reloaded").path
    good = _meta(tiny_model_dir)
    (folder / "lmforge.json").write_text(json.dumps({**good, "labels": ["neg", "pos"]}))
    reloaded = call(site, route, scope="admin")
    assert reloaded.status_code == 200, reloaded.text
    assert reloaded.json()["ref"] == "reloaded:v1" and reloaded.json()["loaded"] is True
    assert predict(site, "reloaded").json()["predictions"][0]["label"] in ("neg", "pos")
    # a loaded version reloads from its files as they are now; a failed reload keeps it serving
    (folder / "lmforge.json").write_text(json.dumps({**good, "labels": ["bad", "good"]}))
    assert call(site, route, scope="admin").status_code == 200
    assert predict(site, "reloaded").json()["predictions"][0]["label"] in ("bad", "good")
    (folder / "lmforge.json").write_text(json.dumps({**good, "max_length": -1}))
    assert_unavailable(call(site, route, scope="admin"), "lmforge.json", "max_length")
    kept = predict(site, "reloaded")
    assert kept.status_code == 200 and kept.json()["predictions"][0]["label"] in ("bad", "good")
    missing = call(site, "/v1/models/reloaded/versions/9/reload", scope="admin")
    assert missing.status_code == 404
    decoder = call(site, "/v1/models/chat/versions/1/reload", scope="admin")
    assert decoder.status_code == 422 and "loads only at start" in decoder.text


def _truncate_onnx(folder: Path) -> None:
    data = (folder / "model.int8.onnx").read_bytes()
    (folder / "model.int8.onnx").write_bytes(data[: len(data) // 3])
    meta = {**_meta(folder), "runtime": {"backend": "onnx-int8"}}
    (folder / "lmforge.json").write_text(json.dumps(meta))


def test_promoting_a_damaged_version_changes_nothing(tmp_path: Path, tiny_model_dir: Path) -> None:
    settings = Settings(home=tmp_path / "home", database_url=None)
    register_copy(settings, tiny_model_dir, "tiny", stage="production")
    registry = Registry(settings)
    _truncate_onnx(registry.get(register_copy(settings, tiny_model_dir, "tiny")).path)
    _, admin = KeyStore(registry.engine).create("admin", ["admin"])
    headers = {"Authorization": f"Bearer {admin}"}
    with LiveServer(serve_config(), settings) as server:
        refused = httpx.post(
            server.url + "/v1/models/tiny/versions/2/promote", headers=headers, timeout=60
        )
        assert_unavailable(refused, "v2/model.int8.onnx")
        assert [v.stage for v in registry.list("tiny")] == ["production", "candidate"]
        served = httpx.post(
            server.url + "/v1/predict", json={"inputs": ["x"]}, headers=headers, timeout=60
        )
        assert served.json()["model"] == "tiny:v1"
    with LiveServer(serve_config(), settings) as restarted:  # the bare name still serves
        again = httpx.post(
            restarted.url + "/v1/predict", json={"inputs": ["x"]}, headers=headers, timeout=60
        )
        assert again.status_code == 200 and again.json()["model"] == "tiny:v1"
