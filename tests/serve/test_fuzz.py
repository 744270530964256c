"""One client's bad input never fails another client's request (the fuzz stage).

Through a real client against the real app (tiny models): text that is not Unicode is refused
before it joins a batch; a request whose rows make the backend raise fails alone while its batch
mates succeed; a model that computes NaN answers a JSON 500 and logs nothing; NUL bytes are
handled alike on SQLite and PostgreSQL; a large request is admitted while small ones keep
coming. Then a seeded mix of poisoned requests (lone surrogates, NUL, empty, huge, wrong types,
bad JSON, NaN-making and backend-failing texts) is sent among concurrent good ones, held into
shared batches, and every good one must succeed.
"""

from __future__ import annotations

import json
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import LiveServer, register_copy, serve_config
from lmforge.monitor import read_predictions
from lmforge.registry import Registry
from lmforge.serve import KeyStore
from lmforge.settings import Settings

NAN_WORD = "zebra"  # the one word whose embedding is NaN in the broken model
POISON_WORD = "poisonpill"  # rows the backend refuses (as a tokenizer refuses what it cannot read)


@pytest.fixture(scope="module")
def nan_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny classifier with a NaN embedding for one token: any text with that word has NaN
    logits (and a NaN sentence embedding); every other text is computed as before, so a check
    at load time passes it."""
    from safetensors.torch import load_file, save_file

    from lmforge.models.tokenizer import TextTokenizer

    folder = tmp_path_factory.mktemp("nan-model")
    shutil.copytree(tiny_model_dir, folder, dirs_exist_ok=True)
    token = TextTokenizer(folder, 32)([NAN_WORD])[0][1]  # [CLS] zebra [SEP]
    tensors = load_file(folder / "model.safetensors")
    key = next(k for k in tensors if k.endswith("word_embeddings.weight"))
    tensors[key][token] = float("nan")
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def start_site(settings: Settings, tiny: Path, broken: Path, **sections: Any) -> LiveServer:
    register_copy(settings, tiny, "tiny", stage="production")
    register_copy(settings, broken, "broken", stage="production")
    _, secret = KeyStore(Registry(settings).engine).create("fuzz", ["predict"])
    raw: dict[str, Any] = {
        "limits": {
            "max_inputs": 8,
            "max_chars": 200,
            "max_body_bytes": 20_000,
            "rate_per_second": None,
        },
        "prediction_log": {"sample_rate": 1.0, "flush_seconds": 0.1, "include_text": True},
        "batching": {"max_batch": 64, "max_queue": 128, "max_wait_ms": 0},
    }
    raw.update(sections)
    server = LiveServer(serve_config(**raw), settings)
    server.headers = {"Authorization": f"Bearer {secret}"}
    server.settings = settings
    return server


@pytest.fixture(scope="module")
def site(
    tiny_model_dir: Path, nan_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    settings = Settings(home=tmp_path_factory.mktemp("fuzz-home"), database_url=None)
    with start_site(settings, tiny_model_dir, nan_model_dir) as server:
        yield server


def post(site: Any, path: str, body: Any, raw: bytes | None = None) -> httpx.Response:
    if raw is not None:
        headers = {**site.headers, "Content-Type": "application/json"}
        return httpx.post(site.url + path, content=raw, headers=headers, timeout=60)
    return httpx.post(site.url + path, json=body, headers=site.headers, timeout=60)


def error_code(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/json"), response.text
    error = response.json()["error"]
    assert "\n" not in error["message"]
    return str(error["code"])


def wait_for(condition: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


class Gate:
    """Holds a model's first inference call until opened, so that the requests sent meanwhile
    queue into one batch; rows with POISON_WORD make the backend raise, as an unreadable text
    makes a tokenizer raise."""

    def __init__(self, site: Any, ref: str) -> None:
        self.batcher = site.state.pool.loaded[ref].batcher
        self.opened = threading.Event()
        self.held_rows = 0
        self.calls: list[list[str]] = []
        run = self.batcher._run

        def gated(rows: list[str]) -> Any:
            self.calls.append(list(rows))
            if not self.opened.is_set():
                self.held_rows = len(rows)
                self.opened.wait(30)
            if any(POISON_WORD in row for row in rows):
                raise TypeError("the tokenizer cannot read this text")
            return run(rows)

        self.batcher._run = gated
        self.restore = lambda: setattr(self.batcher, "_run", run)

    def rows_waiting(self) -> int:
        return self.held_rows + self.batcher.queued_rows

    def __enter__(self) -> Gate:
        return self

    def __exit__(self, *_: object) -> None:
        self.opened.set()
        self.restore()


def send_all(
    site: Any, requests: list[tuple[str, Any, bytes | None]], threads: list[threading.Thread]
) -> list[Any]:
    """Send each (path, body, raw) from its own thread (added to ``threads``); the answers,
    in the same order, once the threads are joined."""
    answers: list[Any] = [None] * len(requests)

    def send(i: int) -> None:
        path, body, raw = requests[i]
        try:
            answers[i] = post(site, path, body, raw)
        except httpx.HTTPError as exc:  # a lost connection counts as a failure
            answers[i] = exc

    for i in range(len(requests)):
        threads.append(threading.Thread(target=send, args=(i,)))
        threads[-1].start()
    return answers


def join(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.join(60)


def predict(*texts: str, model: str = "tiny") -> tuple[str, Any, None]:
    return ("/v1/predict", {"model": model, "inputs": list(texts)}, None)


# --- 1. text that is not Unicode; a failure inside a batch ------------------------------------


@pytest.mark.parametrize("path", ["/v1/predict", "/v1/embed"])
def test_a_lone_surrogate_is_refused_before_it_joins_a_batch(site: Any, path: str) -> None:
    raw = b'{"model": "tiny", "inputs": ["fine", "\\ud800"]}'
    r = post(site, path, None, raw)
    assert r.status_code == 422, r.text
    assert error_code(r) == "invalid_text"
    assert "inputs[1]" in r.json()["error"]["message"]


def test_a_request_whose_rows_fail_fails_alone_and_its_batch_mates_succeed(site: Any) -> None:
    threads: list[threading.Thread] = []
    with Gate(site, "tiny:v1") as gate:
        first = send_all(site, [predict("held")], threads)
        wait_for(lambda: gate.held_rows == 1)
        bodies = [predict(f"good {i}", "a wonderful film") for i in range(6)]
        bodies.insert(3, predict("ok", f"a {POISON_WORD}"))
        answers = send_all(site, bodies, threads)
        wait_for(lambda: gate.rows_waiting() == 1 + 14)
        gate.opened.set()
        join(threads)
    assert first[0].status_code == 200
    poisoned = answers.pop(3)
    assert poisoned.status_code == 500 and error_code(poisoned) == "inference_failed"
    assert [a.status_code for a in answers] == [200] * 6
    assert all(len(a.json()["predictions"]) == 2 for a in answers)
    assert any(len(call) == 14 for call in gate.calls)  # they did share one batch


# --- 3. a model that computes NaN ------------------------------------------------------------


def metric(site: Any, name: str, **labels: str) -> float:
    text = httpx.get(site.url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def test_nan_output_fails_only_its_request_with_a_json_500_and_is_never_logged(
    site: Any,
) -> None:
    before = metric(site, "lmforge_non_finite_outputs_total", model="broken:v1")
    threads: list[threading.Thread] = []
    with Gate(site, "broken:v1") as gate:
        first = send_all(site, [predict("held", model="broken")], threads)
        wait_for(lambda: gate.held_rows == 1)
        requests = [
            predict("a fine film", model="broken"),
            predict("nan", f"a {NAN_WORD}", model="broken"),
            predict("dull", "brilliant", model="broken"),
        ]
        answers = send_all(site, requests, threads)
        wait_for(lambda: gate.rows_waiting() == 6)
        gate.opened.set()
        join(threads)
    assert first[0].status_code == 200
    nan = answers[1]
    assert nan.status_code == 500, nan.text
    assert error_code(nan) == "non_finite_output"
    assert (
        "broken" in nan.json()["error"]["message"] and "version 1" in nan.json()["error"]["message"]
    )
    assert [answers[0].status_code, answers[2].status_code] == [200, 200]
    after = metric(site, "lmforge_non_finite_outputs_total", model="broken:v1")
    assert after == before + 1

    wait_for(lambda: len(read_predictions(site.settings, model="broken")) >= 4)
    time.sleep(0.3)  # a later flush would show a NaN row too
    logged = read_predictions(site.settings, model="broken")
    assert sorted(r.text or "" for r in logged) == ["a fine film", "brilliant", "dull", "held"]


def test_nan_embeddings_fail_their_request_with_a_json_500(site: Any) -> None:
    r = post(site, "/v1/embed", {"model": "broken", "inputs": [f"a {NAN_WORD}"]})
    assert r.status_code == 500 and error_code(r) == "non_finite_output"
    assert post(site, "/v1/embed", {"model": "broken", "inputs": ["fine"]}).status_code == 200


# --- 4. NUL bytes, on both databases ---------------------------------------------------------


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_nul_bytes_are_handled_alike_on_both_databases(
    database: str,
    request: pytest.FixtureRequest,
    tiny_model_dir: Path,
    nan_model_dir: Path,
    tmp_path: Path,
) -> None:
    url = request.getfixturevalue("postgres_url") if database == "postgresql" else None
    settings = Settings(home=tmp_path / "home", database_url=url)
    with start_site(settings, tiny_model_dir, nan_model_dir) as server:
        assert server.state.registry.engine.dialect.name == database
        r = post(server, "/v1/predict", {"model": "tiny", "inputs": ["nul\x00byte", "plain"]})
        assert r.status_code == 200, r.text
        for path in ("/v1/models/%00", "/v1/models/tiny%00", "/v1/models/ti%00ny"):
            shown = httpx.get(server.url + path, headers=server.headers, timeout=10)
            assert shown.status_code == 404, (path, shown.text)
            assert error_code(shown) == "model_not_found"
        r = post(server, "/v1/predict", {"model": "tiny\x00", "inputs": ["x"]})
        assert r.status_code == 404 and error_code(r) == "model_not_found"
        wait_for(lambda: len(read_predictions(settings, model="tiny")) == 2)
        # the log goes on after the NUL row: nothing is stuck behind it
        assert post(server, *predict("after")[:2]).status_code == 200
        wait_for(lambda: len(read_predictions(settings, model="tiny")) == 3)
    assert [r.text for r in read_predictions(settings, model="tiny")] == [
        "nulbyte",
        "plain",
        "after",
    ]


# --- 7. large requests among small ones --------------------------------------------------------


def test_a_large_request_is_admitted_while_small_ones_keep_coming(
    tiny_model_dir: Path, nan_model_dir: Path, tmp_path: Path
) -> None:
    """max_queue 4 and max_inputs 8 (as 32 and 64): a 6-input request used to be refused
    until the queue was empty, which steady small traffic never let happen."""
    settings = Settings(home=tmp_path / "home", database_url=None)
    batching = {"max_batch": 2, "max_queue": 4, "max_wait_ms": 0}
    with start_site(settings, tiny_model_dir, nan_model_dir, batching=batching) as server:
        threads: list[threading.Thread] = []
        with Gate(server, "tiny:v1") as gate:
            held = send_all(server, [predict("held")], threads)
            wait_for(lambda: gate.held_rows == 1)
            small = send_all(server, [predict(f"s{i}") for i in range(3)], threads)
            wait_for(lambda: gate.batcher.queued_rows == 3)
            large = send_all(server, [predict(*[f"l{i}" for i in range(6)])], threads)
            wait_for(lambda: gate.batcher.reserved_rows == 6)  # waits for room, not refused
            later = post(server, *predict("later")[:2])  # it would fit, but it came later
            assert later.status_code == 429 and error_code(later) == "queue_full"
            assert int(later.headers["Retry-After"]) >= 1
            gate.opened.set()
            join(threads)
        assert held[0].status_code == 200
        assert [a.status_code for a in small] == [200] * 3
        assert large[0].status_code == 200, large[0].text
        assert len(large[0].json()["predictions"]) == 6
        assert post(server, *predict("again")[:2]).status_code == 200


# --- the fuzz stage ------------------------------------------------------------------------------


GOOD_TEXTS = [
    "a wonderful film",
    "dull",
    "naïve café, déjà vu",
    "東京の映画はすばらしい",
    "emoji 🎬🍿 fine",
    "mixed\ttabs\nand newlines",
    "x" * 200,
]

# (path, body, raw bytes, the statuses it may get): never a 5xx, except a model's own failure
POISON: list[tuple[str, Any, bytes | None, set[int]]] = [
    ("/v1/predict", None, b'{"model": "tiny", "inputs": ["\\ud800"]}', {422}),
    ("/v1/predict", None, b'{"model": "tiny", "inputs": ["ok", "lone \\udfff tail"]}', {422}),
    ("/v1/embed", None, b'{"model": "tiny", "inputs": ["\\udbff"]}', {422}),
    (*predict("nul\x00inside"), {200}),
    (*predict(), {422}),
    (*predict(""), {200}),
    (*predict("x" * 201), {422}),
    (*predict(*["x"] * 9), {422}),
    ("/v1/predict", {"model": "tiny", "inputs": "not a list"}, None, {422}),
    ("/v1/predict", {"model": "tiny", "inputs": [1, None, {"a": 1}]}, None, {422}),
    ("/v1/predict", {"inputs": ["x"], "model": 7}, None, {422}),
    ("/v1/predict", {"inputs": ["x"]}, None, {422}),  # two models served: must name one
    (*predict("x", model="\x00"), {404}),
    ("/v1/embed", {"model": "nope\x00", "inputs": ["x"]}, None, {404}),
    (
        "/v1/embed",
        {"model": "~no-such-user", "inputs": ["x"]},
        None,
        {404},
    ),  # found by schemathesis
    ("/v1/predict", None, b'{"inputs": ["unterminated', {400}),
    ("/v1/predict", None, b"[1, 2, 3]", {400}),
    ("/v1/predict", None, b"\xff\xfe not utf-8", {400}),
    ("/v1/predict", None, b'{"inputs": ["x" ' + b" " * 30_000 + b"]}", {413}),
    (*predict(f"a {POISON_WORD}"), {500}),  # the backend raises on it (inference_failed)
    (*predict(f"a {NAN_WORD}", model="broken"), {500}),  # non_finite_output
    ("/v1/embed", {"model": "broken", "inputs": [NAN_WORD]}, None, {500}),
]


def rows_for(path: str, body: Any, allowed: set[int]) -> int:
    """The rows a request puts into tiny's predict batcher (none if it is refused first)."""
    if path != "/v1/predict" or not isinstance(body, dict) or allowed & {200, 500} == set():
        return 0
    return len(body["inputs"]) if body.get("model") == "tiny" else 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_poisoned_requests_among_concurrent_good_ones_never_fail_a_good_one(
    site: Any, seed: int
) -> None:
    rng = random.Random(seed)
    good: list[tuple[str, Any, bytes | None]] = []
    for _ in range(16):
        texts = rng.sample(GOOD_TEXTS, rng.randint(1, 4))
        path = rng.choice(["/v1/predict", "/v1/predict", "/v1/embed"])
        good.append((path, {"model": "tiny", "inputs": texts}, None))
    poison = rng.sample(POISON, 11)
    mixed = [(True, g, {200}) for g in good] + [(False, p[:3], p[3]) for p in poison]
    rng.shuffle(mixed)
    predict_rows = sum(rows_for(path, body, allowed) for _, (path, body, _), allowed in mixed)

    assert post(site, "/v1/embed", {"model": "tiny", "inputs": ["load"]}).status_code == 200
    # One inference thread serves every model: holding tiny's predict call holds them all, so
    # every request queues meanwhile (each model's in one batch), and the bad ones are refused.
    threads: list[threading.Thread] = []
    with Gate(site, "tiny:v1") as gate:
        send_all(site, [predict("held")], threads)
        wait_for(lambda: gate.held_rows == 1)
        answers = send_all(site, [request for _, request, _ in mixed], threads)
        wait_for(lambda: gate.rows_waiting() == 1 + predict_rows)
        gate.opened.set()
        join(threads)

    failures = []
    for (is_good, (path, body, raw), allowed), answer in zip(mixed, answers, strict=True):
        what = f"{path} {body if raw is None else raw[:60]!r}"
        if isinstance(answer, Exception):
            failures.append(f"{what}: {answer!r}")
            continue
        if answer.status_code not in allowed:
            failures.append(f"{what}: {answer.status_code} {answer.text[:200]}")
        elif answer.status_code >= 400:
            error_code(answer)  # a JSON error body, one line
        elif is_good:
            key = "predictions" if path == "/v1/predict" else "embeddings"
            assert len(answer.json()[key]) == len(body["inputs"])
    assert failures == []
    if predict_rows > 8:  # the requests did share batches (one is at most 4 rows)
        assert len(gate.calls[1]) > 4
    # a server that answered all that still answers
    assert post(site, *predict("still fine")[:2]).status_code == 200
    assert json.loads(httpx.get(site.url + "/healthz", timeout=10).text) == {"status": "ok"}


def test_a_model_name_like_a_home_folder_is_not_found(site: Any) -> None:
    """pathlib raises RuntimeError expanding "~name" for no such user: that was a plain 500."""
    r = post(site, "/v1/embed", {"model": "~no-such-user", "inputs": ["x"]})
    assert r.status_code == 404 and error_code(r) == "model_not_found"
