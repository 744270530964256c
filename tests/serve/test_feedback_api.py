"""POST /v1/feedback: scopes, 404/422/413, the idempotent update, feedback on a prediction still
in the log's write buffer, the Prometheus counter, and durability: every acknowledged feedback
row survives `kill -9` of a real `lmforge serve` process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import LiveServer, free_port, register_copy, serve_config
from lmforge.monitor import list_feedback, read_predictions
from lmforge.registry import Registry
from lmforge.serve import KeyStore
from lmforge.settings import Settings


@pytest.fixture(scope="module")
def site(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A server whose prediction log flushes only once a minute: every fresh id is buffered."""
    settings = Settings(home=tmp_path_factory.mktemp("feedback-home"), database_url=None)
    register_copy(settings, tiny_model_dir, "tiny", stage="production")
    store = KeyStore(Registry(settings).engine)
    keys = {scope: store.create(scope, [scope])[1] for scope in ("predict", "feedback")}
    config = serve_config(
        limits={"max_chars": 50, "max_body_bytes": 4096, "rate_per_second": None},
        prediction_log={"flush_seconds": 60},
    )
    with LiveServer(config, settings) as server:
        server.keys = keys
        server.settings = settings
        yield server


def post(site: Any, path: str, body: Any, scope: str = "feedback") -> httpx.Response:
    headers = {"Authorization": f"Bearer {site.keys[scope]}", "Content-Type": "application/json"}
    # json.dumps escapes a lone surrogate (\ud800), which httpx's own encoder refuses
    return httpx.post(site.url + path, content=json.dumps(body), headers=headers, timeout=30)


def predicted(site: Any, *texts: str) -> list[dict[str, Any]]:
    r = post(site, "/v1/predict", {"inputs": list(texts)}, scope="predict")
    assert r.status_code == 200, r.text
    result: list[dict[str, Any]] = r.json()["predictions"]
    return result


def error(r: httpx.Response, status: int, code: str, *needles: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert body["code"] == code and "\n" not in body["message"]
    for needle in needles:
        assert needle in body["message"], body["message"]


def test_feedback_on_a_just_answered_prediction_still_buffered(site: Any) -> None:
    (p,) = predicted(site, "a wonderful film")
    assert len(p["prediction_id"]) == 32
    assert site.state.log._buffer  # not written yet: flush_seconds is 60
    r = post(site, "/v1/feedback", {"prediction_id": p["prediction_id"], "correct": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["kind"], body["model"], body["version"]) == ("correct", "tiny", 1)
    assert body["label"] == body["predicted"] == p["label"]
    ids = {r.prediction_id for r in read_predictions(site.settings)}
    assert p["prediction_id"] in ids  # the buffer was flushed first


def test_a_repeat_updates_the_same_row(site: Any) -> None:
    (p,) = predicted(site, "dull")
    other = "negative" if p["label"] == "positive" else "positive"
    first = post(site, "/v1/feedback", {"prediction_id": p["prediction_id"], "correct": True})
    second = post(
        site,
        "/v1/feedback",
        {"prediction_id": p["prediction_id"], "label": other, "comment": "sarcasm"},
    )
    assert first.status_code == second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    assert (second.json()["label"], second.json()["correct"]) == (other, False)
    rows = [
        f for f in list_feedback(settings=site.settings) if f.prediction_id == p["prediction_id"]
    ]
    assert len(rows) == 1 and rows[0].comment == "sarcasm"


def test_scopes_a_predict_key_is_refused_a_feedback_key_allowed(site: Any) -> None:
    body = {"text": "great fun", "label": "positive", "model": "tiny"}
    error(post(site, "/v1/feedback", body, scope="predict"), 403, "missing_scope", "'feedback'")
    r = httpx.post(site.url + "/v1/feedback", json=body, timeout=30)
    error(r, 401, "missing_key")
    ok = post(site, "/v1/feedback", body)
    assert ok.status_code == 200 and ok.json()["kind"] == "example"


def test_unknown_id_404_unknown_label_422_oversize_413(site: Any) -> None:
    error(
        post(site, "/v1/feedback", {"prediction_id": "0" * 32, "label": "positive"}),
        404,
        "prediction_not_found",
        "no prediction with id",
    )
    (p,) = predicted(site, "fine")
    error(
        post(site, "/v1/feedback", {"prediction_id": p["prediction_id"], "label": "meh"}),
        422,
        "unknown_label",
        "use one of: negative, positive",
    )
    error(
        post(site, "/v1/feedback", {"text": "ok", "label": "meh", "model": "tiny"}),
        422,
        "unknown_label",
        "not a label of tiny:v1",
    )
    error(post(site, "/v1/feedback", {"comment": "x"}), 422, "invalid_feedback", "send")
    error(
        post(
            site,
            "/v1/feedback",
            {"prediction_id": p["prediction_id"], "correct": True, "comment": "x" * 2001},
        ),
        422,
        "invalid_field",
        "comment",
    )
    error(
        post(site, "/v1/feedback", {"text": "x" * 60, "label": "positive", "model": "tiny"}),
        422,
        "input_too_long",
    )
    big = {"text": "x" * 5000, "label": "positive", "model": "tiny"}
    assert post(site, "/v1/feedback", big).status_code == 413
    error(
        post(site, "/v1/feedback", {"model": "nosuch", "text": "a", "label": "b"}),
        404,
        "model_not_found",
    )


def test_interactions_and_the_prometheus_counter(site: Any) -> None:
    r = post(
        site, "/v1/feedback", {"user_id": "u1", "item_id": "i2", "event": "rating", "value": 4}
    )
    assert r.status_code == 200 and r.json()["kind"] == "interaction"
    metrics = httpx.get(site.url + "/metrics", timeout=30).text
    assert 'lmforge_feedback_events_total{kind="interaction",model=""} 1.0' in metrics
    assert 'lmforge_feedback_events_total{kind="example",model="tiny"}' in metrics


def test_what_no_database_stores_is_cleaned_or_refused_never_a_server_error(site: Any) -> None:
    body = {"text": "nul\x00here", "label": "positive", "model": "tiny", "comment": "a\x00b"}
    r = post(site, "/v1/feedback", body)
    assert r.status_code == 200, r.text
    (row,) = [f for f in list_feedback(settings=site.settings) if f.id == r.json()["id"]]
    assert (row.text, row.comment) == ("nulhere", "ab")
    surrogate = post(site, "/v1/feedback", {**body, "comment": "x\ud800y"})
    error(surrogate, 422, "invalid_field", "comment")
    nosuch = {"user_id": "u", "item_id": "i", "event": "click", "model": "m" * 100}
    error(post(site, "/v1/feedback", nosuch), 404, "model_not_found")


# --- durability ------------------------------------------------------------------------------


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _start(env: dict[str, str], port: int) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "lmforge.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + 90
    while not _ready(port):
        assert process.poll() is None and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    return process


def test_acknowledged_feedback_survives_kill_9(tmp_path: Path, tiny_model_dir: Path) -> None:
    settings = Settings(home=tmp_path / "home", database_url=None)
    register_copy(settings, tiny_model_dir, "tiny", stage="production")
    store = KeyStore(Registry(settings).engine)
    headers = {
        scope: {"Authorization": f"Bearer {store.create(scope, [scope])[1]}"}
        for scope in ("predict", "feedback")
    }
    env = {
        **os.environ,
        "LMFORGE_HOME": str(settings.home),
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    env.pop("LMFORGE_DATABASE_URL", None)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = _start(env, port)
    try:
        ids: list[str] = []
        for _ in range(4):  # 256 predictions: far more than the burst gets through
            r = httpx.post(
                url + "/v1/predict",
                json={"inputs": [f"text {i}" for i in range(64)]},
                headers=headers["predict"],
                timeout=60,
            )
            assert r.status_code == 200, r.text
            ids += [p["prediction_id"] for p in r.json()["predictions"]]
        acknowledged: list[str] = []
        lock = threading.Lock()

        def burst(mine: list[str]) -> None:
            with httpx.Client(timeout=30) as client:
                for pid in mine:
                    try:
                        answer = client.post(
                            url + "/v1/feedback",
                            json={"prediction_id": pid, "label": "positive"},
                            headers=headers["feedback"],
                        )
                    except httpx.HTTPError:
                        return  # the server is gone
                    if answer.status_code == 200:
                        with lock:
                            acknowledged.append(pid)

        threads = [threading.Thread(target=burst, args=(ids[i::4],)) for i in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(acknowledged) < 8:  # mid-burst: some answered, more on their way
            assert time.monotonic() < deadline
            time.sleep(0.005)
        os.kill(process.pid, signal.SIGKILL)
        for t in threads:
            t.join(timeout=60)
        process.wait(timeout=30)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGKILL
    assert 8 <= len(acknowledged) < len(ids)  # killed before the burst was through
    stored = {f.prediction_id for f in list_feedback(settings=settings)}
    assert set(acknowledged) <= stored
    # restarted on the same database: the rows are there, and feedback goes on updating them
    process = _start(env, port)
    try:
        again = httpx.post(
            url + "/v1/feedback",
            json={"prediction_id": acknowledged[0], "label": "negative"},
            headers=headers["feedback"],
            timeout=30,
        )
        assert again.status_code == 200, again.text
    finally:
        process.terminate()
        process.wait(timeout=30)
    rows = list_feedback(settings=settings)
    assert len(rows) == len(stored)
    assert {f.label for f in rows if f.prediction_id == acknowledged[0]} == {"negative"}
