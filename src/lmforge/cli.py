"""The ``lmforge`` command line: parses arguments, calls the library, prints results.

Errors in the user's input arrive as :class:`LmforgeError` and leave as one line on stderr with
exit code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from lmforge.errors import LmforgeError
from lmforge.registry.card import percent

if TYPE_CHECKING:  # the tasks import torch: loaded only when a recipe runs
    from lmforge.tasks import Report

app = typer.Typer(
    help="lmforge: adapt, evaluate and register language models from one recipe.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
models_app = typer.Typer(help="The model registry: list, show and promote versions.")
app.add_typer(models_app, name="models")
keys_app = typer.Typer(help="API keys for the server: create, list and revoke.")
app.add_typer(keys_app, name="keys")
apps_app = typer.Typer(help="Applications built on the engine.")
app.add_typer(apps_app, name="app")
# Tables are wide; when piped (no terminal to size them by) do not squeeze them into 80 columns.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)
_state = {"debug": False}


class RichProgress:
    """Draws library progress as a rich bar on stderr."""

    def __init__(self) -> None:
        self._bar: Progress | None = None
        self._task: Any = None

    def start(self, description: str, total: int, completed: int = 0) -> None:
        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[metrics]}"),
            TimeRemainingColumn(),
            console=err,
            transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task(description, total=total, completed=completed, metrics="")

    def advance(self, steps: int = 1, **metrics: float) -> None:
        if self._bar is not None:
            shown = " ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            self._bar.update(self._task, advance=steps, metrics=shown)

    def note(self, message: str) -> None:
        (self._bar.console if self._bar else err).print(f"[dim]{message}[/dim]")

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def _metrics_table(metrics: dict[str, Any], baselines: dict[str, Any], title: str) -> Table:
    table = Table(title=title)
    for column in ("model", "accuracy", "macro-F1", "ROC-AUC"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, m in [("this model", metrics), *baselines.items()]:
        scores = (m["accuracy"], m["macro_f1"], m.get("roc_auc"))
        table.add_row(name, *(percent(v) for v in scores))
    return table


_BACKEND_OPTION = typer.Option(
    "--backend",
    help="Runtime backend (torch-fp32, torch-bf16, torch-int8, onnx-fp32, onnx-int8); "
    "default: the one the version was registered for.",
)


@app.command()
def run(
    recipe: Annotated[Path, typer.Argument(help="Recipe file (YAML).")],
    resume: Annotated[
        Path | None, typer.Option(help="Resume the run folder of an interrupted run.")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Run every stage the recipe names: data, fine-tuning, evaluation, registration."""
    _run(recipe, resume, json_output, register=None)


@app.command()
def train(
    recipe: Annotated[Path, typer.Argument(help="Recipe file (YAML).")],
    resume: Annotated[
        Path | None, typer.Option(help="Resume the run folder of an interrupted run.")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Fine-tune and evaluate into a run folder, without registering a version."""
    _run(recipe, resume, json_output, register=False)


def _print_table(
    title: str, columns: list[str], rows: list[list[str]], text_columns: int = 1
) -> None:
    """A table of figures: the first `text_columns` columns name things (left-aligned), the
    rest are numbers (right-aligned)."""
    table = Table(title=title)
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i < text_columns else "right")
    for row in rows:
        table.add_row(*row)
    out.print(table)


def _run(recipe_path: Path, resume: Path | None, json_output: bool, register: bool | None) -> None:
    from lmforge.recipe import load_recipe

    recipe = load_recipe(recipe_path)  # before the heavy imports: a bad recipe fails at once
    from lmforge.tasks import run_recipe

    result = run_recipe(recipe, register=register, resume=resume, progress=RichProgress())
    if json_output:
        _print_json(result.summary())
        return
    _print_report(result.report())
    if result.compression is not None:
        _print_compress(result.compression)


def _print_report(report: Report) -> None:
    """A run's report, whatever its task: its tables, then its lines."""
    for table in report.tables:
        _print_table(table.title, table.columns, table.rows, table.text_columns)
    for line in report.lines:
        out.print(line.text, highlight=line.highlight)


@app.command()
def evaluate(
    model: Annotated[str, typer.Argument(help="NAME[:VERSION] of a registered model.")],
    backend: Annotated[str | None, _BACKEND_OPTION] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Re-evaluate a registered version on its recipe's test split, beside baselines."""
    from lmforge.data import prepare_data
    from lmforge.evaluate import score_baselines, score_test_split
    from lmforge.recipe import load_recipe
    from lmforge.registry import Registry
    from lmforge.runtime import Predictor

    version = Registry().get(model)
    recipe = load_recipe(version.path / "recipe.yaml")
    data = prepare_data(recipe.data)
    predictor = Predictor(version.path, backend=backend)
    proba = predictor.predict_proba(data.test["text"].tolist())
    metrics = score_test_split(data, proba, from_logits=False)
    baselines = score_baselines(data, recipe.evaluation.baselines)
    if json_output:
        _print_json(
            {
                "ref": version.ref,
                "backend": predictor.backend.name,
                "test_metrics": metrics,
                "baseline_metrics": baselines,
            }
        )
    else:
        title = f"{version.ref} ({predictor.backend.name}): test split"
        out.print(_metrics_table(metrics, baselines, title))


@app.command()
def predict(
    model: Annotated[str, typer.Argument(help="NAME[:VERSION] of a registered model.")],
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to classify.")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="A file with one text per line.")
    ] = None,
    backend: Annotated[str | None, _BACKEND_OPTION] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Classify texts with a registered model."""
    from lmforge.registry import Registry
    from lmforge.runtime import Predictor

    items = list(texts or [])
    if file is not None:
        if not file.is_file():
            raise LmforgeError(f"input file {file} not found", "check the path given to --file")
        items += [line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not items:
        raise LmforgeError("no texts to classify", "pass texts as arguments or --file FILE")
    version = Registry().get(model)
    predictor = Predictor(version.path, backend=backend)
    predictions = predictor.predict(items)
    if json_output:
        _print_json(
            {
                "model": version.ref,
                "backend": predictor.backend.name,
                "predictions": [p.to_json() for p in predictions],
            }
        )
        return
    table = Table(title=version.ref)
    for column in ("label", "score", "text"):
        table.add_column(column)
    for p in predictions:
        table.add_row(p.label, f"{p.score:.3f}", p.text)
    out.print(table)


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="The message (chat) or text to continue.")],
    model: Annotated[
        str,
        typer.Option("--model", "-m", help="A catalogue decoder or a local causal-LM folder."),
    ] = "smollm2-135m-instruct",
    system: Annotated[str | None, typer.Option(help="A system message (chat only).")] = None,
    raw: Annotated[
        bool, typer.Option("--raw", help="Continue the text as is, without the chat template.")
    ] = False,
    max_tokens: Annotated[int, typer.Option(min=1, help="Tokens to generate at most.")] = 256,
    temperature: Annotated[float, typer.Option(min=0, help="0 is greedy.")] = 0.7,
    top_p: Annotated[float, typer.Option(min=0, max=1)] = 0.9,
    top_k: Annotated[int, typer.Option(min=0, help="0: off.")] = 0,
    repetition_penalty: Annotated[float, typer.Option(min=0)] = 1.1,
    stop: Annotated[
        list[str] | None, typer.Option(help="Stop at this string (repeatable).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Same seed, same text.")] = None,
    weights: Annotated[str, typer.Option(help="int8, bf16 or fp32.")] = "int8",
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON when done.")] = False,
) -> None:
    """Generate text with a decoder, streamed to the terminal as it is produced."""
    from lmforge.registry.refs import resolve_model
    from lmforge.runtime.generation import GenerationEngine, SamplingParams
    from lmforge.settings import get_settings

    if weights not in ("int8", "bf16", "fp32"):
        raise LmforgeError(f"unknown weight format '{weights}'", "use int8, bf16 or fp32")
    decoder = resolve_model(model, "decoder")  # before loading anything: a wrong name fails now
    params = SamplingParams(
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        repetition_penalty=repetition_penalty,
        stop=tuple(stop or ()),
        seed=seed,
    )
    params.check()
    folder = decoder.locate(get_settings().cache_dir)
    engine = GenerationEngine.from_folder(folder, weights, max_batch=1)  # type: ignore[arg-type]
    try:
        # a base model without a chat template (gemma3-270m) continues the text as is
        if raw or not getattr(engine.tokenizer, "chat_template", None):
            ids = engine.encode(prompt)
        else:
            messages = [{"role": "system", "content": system}] if system else []
            ids = engine.encode_chat([*messages, {"role": "user", "content": prompt}])

        def show(delta: str, _: object) -> None:
            out.file.write(delta)
            out.file.flush()

        done = engine.generate(ids, params, on_text=None if json_output else show)
    finally:
        engine.close()
    if json_output:
        _print_json(
            {
                "model": model,
                "text": done.text,
                "finish_reason": done.finish_reason,
                "prompt_tokens": done.prompt_tokens,
                "completion_tokens": len(done.tokens),
                "time_to_first_token_s": round(done.first_token_s, 4),
            }
        )
    else:
        out.file.write("\n")


@app.command()
def compress(
    model: Annotated[str, typer.Argument(help="NAME[:VERSION] of a registered classifier.")],
    recipe: Annotated[
        Path | None,
        typer.Option(help="A recipe whose `compress` section to use (default: the version's)."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Build, evaluate and time compressed variants; register the fastest within budget."""
    from lmforge.recipe import load_recipe

    config = load_recipe(recipe).compress if recipe is not None else None
    from lmforge.compress.stage import compress_version

    result = compress_version(model, config, progress=RichProgress())
    if json_output:
        _print_json(result.to_json())
        return
    _print_compress(result)


def _print_compress(result: Any) -> None:
    table = Table(title=f"{result.source.ref}: compression trade-off")
    columns = ("variant", "size MB", "p50 ms", "seq/s", "× ref", "accuracy", "Δ pt", "budget")
    for column in columns:
        left = column == "variant"
        table.add_column(column, justify="left" if left else "right", no_wrap=left)
    for v in result.variants:
        name = f"[bold]{v.name}[/bold] ★" if v is result.chosen else v.name
        if v.error is not None:
            table.add_row(name, *(["–"] * 6), f"[red]{v.error[:60]}[/red]")
            continue
        table.add_row(
            name,
            f"{v.size_mb:.1f}",
            f"{v.p50_ms:.2f}",
            f"{v.sequences_per_second:.1f}",
            f"{v.speedup:.2f}",
            percent(v.accuracy),
            f"{v.delta_points:+.2f}",
            "yes" if v.within_budget else "no",
        )
    out.print(table)
    for note in result.notes:
        out.print(f"[dim]{note}[/dim]")
    if result.version is not None:
        v = result.version
        out.print(
            f"registered [bold]{v.ref}[/bold] ({result.chosen.name}, parent {v.parent}) at {v.path}"
        )
    out.print(f"trade-off table and chart: {result.run_dir}/tradeoff.md, tradeoff.png")


@app.command()
def schema() -> None:
    """Print the recipe's JSON Schema (every key, its type, default and meaning)."""
    from lmforge.recipe import recipe_json_schema

    _print_json(recipe_json_schema())


@models_app.command("list")
def models_list(
    name: Annotated[str | None, typer.Argument(help="Only versions of this model.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List registered model versions."""
    from lmforge.registry import Registry

    versions = Registry().list(name)
    if json_output:
        _print_json([v.to_json() for v in versions])
        return
    table = Table(title="registered models")
    for column in ("model", "stage", "task", "base", "test acc", "macro-F1", "created"):
        table.add_column(column)
    for v in versions:
        table.add_row(
            v.ref,
            v.stage,
            v.task,
            v.base_model,
            percent(v.metrics.get("accuracy")),
            percent(v.metrics.get("macro_f1")),
            v.created_at.strftime("%Y-%m-%d %H:%M"),
        )
    out.print(table)


@models_app.command("show")
def models_show(
    model: Annotated[str, typer.Argument(help="NAME[:VERSION]")],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show one version: stage, path, labels, metrics beside baselines."""
    from lmforge.registry import Registry

    v = Registry().get(model)
    if json_output:
        _print_json(v.to_json())
        return
    out.print(f"[bold]{v.ref}[/bold]  stage {v.stage}  task {v.task}  base {v.base_model}")
    out.print(f"path {v.path}")
    out.print(f"labels {', '.join(v.labels)}")
    out.print(_metrics_table(v.metrics, v.baselines, "test split"))


@models_app.command("promote")
def models_promote(model: Annotated[str, typer.Argument(help="NAME:VERSION")]) -> None:
    """Make a version the production one (the previous production version is archived)."""
    from lmforge.registry import Registry

    v = Registry().promote(model)
    out.print(f"{v.ref} is now in production")


@models_app.command("catalogue")
def models_catalogue(
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the built-in base models."""
    from lmforge.models import CATALOGUE

    if json_output:
        _print_json(
            [
                {
                    "name": e.name,
                    "kind": e.kind,
                    "description": e.description,
                    "languages": list(e.languages),
                    "parameters": e.parameters,
                    "licence": e.licence,
                    "package": e.package,
                }
                for e in CATALOGUE.values()
            ]
        )
        return
    table = Table(title="base model catalogue")
    for column in ("name", "kind", "parameters", "languages", "package", "licence", "description"):
        table.add_column(column)
    for e in CATALOGUE.values():
        table.add_row(
            e.name,
            e.kind,
            e.parameters,
            ", ".join(e.languages),
            e.package,
            e.licence,
            e.description,
        )
    out.print(table)


@app.command()
def bench(
    model: Annotated[str, typer.Argument(help="NAME[:VERSION] of a registered model.")],
    backend: Annotated[
        list[str] | None,
        typer.Option("--backend", help="Only this backend (repeatable); default: all available."),
    ] = None,
    length: Annotated[
        list[int] | None,
        typer.Option("--length", help="Throughput token length (repeatable); default 64, 128."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Batch size of the throughput.")] = 32,
    runs: Annotated[int, typer.Option(help="Batch-1 requests timed for the latency.")] = 50,
    min_seconds: Annotated[
        float, typer.Option(help="Shortest time each throughput is measured for.")
    ] = 1.0,
    baselines: Annotated[
        bool, typer.Option(help="Also measure torch fp32 eager and transformers' pipeline.")
    ] = True,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Measure every backend of a version side by side, beside torch eager, transformers'
    pipeline and the machine's own matmul peaks, in one process and one run."""
    from lmforge.registry import Registry
    from lmforge.runtime.bench import bench_model

    registry = Registry()
    version = registry.get(model)
    # A compressed version is compared with the model it was compressed from.
    parent = registry.get(version.parent).path if version.parent else None
    report = bench_model(
        version.path,
        baseline_folder=parent,
        backends=backend,
        lengths=tuple(length or (64, 128)),
        batch_size=batch_size,
        latency_runs=runs,
        min_seconds=min_seconds,
        baselines=baselines,
        progress=RichProgress(),
    )
    if json_output:
        _print_json(report.to_json())
        return

    def num(value: float | None, spec: str, suffix: str = "") -> str:
        return "—" if value is None else f"{value:{spec}}{suffix}"

    table = Table(title=f"{report.model}: batch 1 latency, batch {report.batch_size} throughput")
    columns = ["backend", "MB", "p50 ms", "p99 ms", "p50 ×eager"]
    for n in report.lengths:
        columns += [f"seq/s @{n}", f"×eager @{n}", f"% peak @{n}"]
    for column in columns:
        table.add_column(column, justify="left" if column == "backend" else "right")
    for r in report.results:
        lat = r.latency
        cells = [
            r.backend + (" [red](failed)[/red]" if r.error else ""),
            num(r.size_mb, ".1f"),
            num(lat.p50_ms if lat else None, ".2f"),
            num(lat.p99_ms if lat else None, ".2f"),
            num(report.latency_speedup(r), ".1f", "×"),
        ]
        for n in report.lengths:
            run = r.throughput.get(n)
            share = report.share_of_peak(r, n)
            cells += [
                num(run.sequences_per_second if run else None, ".1f"),
                num(report.speedup(r, n), ".1f", "×"),
                num(None if share is None else 100 * share, ".1f", f"% {r.peak}"),
            ]
        table.add_row(*cells)
    out.print(table)
    m = report.machine
    out.print(
        f"{m.cpu}, {m.threads} threads; peaks fp32 {m.peaks.fp32_gflops:.0f} GFLOP/s, "
        f"int8 {m.peaks.int8_gops:.0f} GOP/s; texts: {report.texts_source}",
        highlight=False,
    )
    for r in report.results:
        if r.error:
            out.print(f"[red]{r.backend}[/red]: {r.error}", highlight=False, soft_wrap=True)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind [default: 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [default: 8000].")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="Server config YAML (limits, batching, ...).")
    ] = None,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Serve without API keys (loopback hosts only).")
    ] = False,
    decoder: Annotated[
        list[str] | None,
        typer.Option(
            "--decoder",
            help="Serve this decoder for chat/completions, e.g. smollm2-135m-instruct "
            "(repeatable; adds to generation.models).",
        ),
    ] = None,
    assistant: Annotated[
        str | None,
        typer.Option(
            "--assistant",
            help="Serve this registered assistant (from an assistant recipe) on "
            "/v1/assistant/ask, in place of the config's FAQ.",
        ),
    ] = None,
) -> None:
    """Serve registered models over HTTP until Ctrl-C / SIGTERM (then finish queued requests)."""
    import logging

    from lmforge.serve import load_serve_config, run_server
    from lmforge.serve.server import check_bind

    settings = load_serve_config(config, host=host, port=port)
    if no_auth:
        auth = settings.auth.model_copy(update={"enabled": False})
        settings = settings.model_copy(update={"auth": auth})
    if decoder:
        models = [*settings.generation.models, *decoder]
        generation = settings.generation.model_copy(update={"models": models})
        settings = settings.model_copy(update={"generation": generation})
    if assistant is not None:
        from lmforge.serve.config import AssistantConfig

        kept = settings.assistant  # its generation settings stay; its FAQ gives way
        section = AssistantConfig(
            model=assistant,
            generate=kept.generate if kept else False,
            generate_max_tokens=kept.generate_max_tokens if kept else 160,
        )
        settings = settings.model_copy(update={"assistant": section})
    check_bind(settings)  # before the banner: a refused start prints only its error
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    err.print(
        f"lmforge serving on http://{settings.host}:{settings.port} "
        f"(API docs at /docs; auth {'on' if settings.auth.enabled else 'OFF'})",
        highlight=False,
    )
    run_server(settings)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="Who or what the key is for.")],
    scope: Annotated[
        list[str],
        typer.Option("--scope", help="predict, feedback or admin (repeat for several)."),
    ],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Create an API key; its secret is printed once and stored only as a hash."""
    from lmforge.registry import Registry
    from lmforge.serve import KeyStore

    key, secret = KeyStore(Registry().engine).create(name, scope)
    if json_output:
        _print_json({**key.to_json(), "key": secret})
        return
    out.print(f"created key '{key.name}' (id {key.id}, scopes {', '.join(key.scopes)})")
    out.print("the secret is shown only now; store it safely:", highlight=False)
    print(secret)


@keys_app.command("list")
def keys_list(
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List API keys (names, prefixes, scopes; never the secrets)."""
    from lmforge.registry import Registry
    from lmforge.serve import KeyStore

    keys = KeyStore(Registry().engine).all()
    if json_output:
        _print_json([k.to_json() for k in keys])
        return
    table = Table(title="API keys")
    for column in ("id", "name", "prefix", "scopes", "created", "status"):
        table.add_column(column)
    for k in keys:
        status = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
        table.add_row(
            str(k.id),
            k.name,
            k.prefix + "…",
            ", ".join(k.scopes),
            f"{k.created_at:%Y-%m-%d %H:%M}",
            status,
        )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="The key's name, id or prefix.")],
) -> None:
    """Revoke API keys; servers refuse them within auth.cache_seconds."""
    from lmforge.registry import Registry
    from lmforge.serve import KeyStore

    for k in KeyStore(Registry().engine).revoke(key):
        out.print(f"revoked key '{k.name}' (id {k.id})")


@apps_app.command("assistant")
def app_assistant(
    questions: Annotated[list[str] | None, typer.Argument(help="Questions to answer.")] = None,
    faq: Annotated[
        str | None,
        typer.Option(
            "--faq",
            help="debian_faq, chatterbot_support or a CSV/JSON/JSONL file [default: debian_faq].",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", help="A registered assistant (from an assistant recipe) instead of --faq."
        ),
    ] = None,
    encoder: Annotated[
        str | None,
        typer.Option(
            help="Encoder for --faq: catalogue, folder or similarity model "
            "[default: multilingual-e5-small]."
        ),
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(help="Answer only at or above this cosine similarity.")
    ] = None,
    top_k: Annotated[int | None, typer.Option("--top-k", min=1, max=20)] = None,
    generate: Annotated[
        bool,
        typer.Option(
            "--generate",
            help="Also write an answer from the top entries with --decoder (questions in a "
            "language it covers).",
        ),
    ] = False,
    decoder: Annotated[str, typer.Option(help="Decoder for --generate.")] = "smollm2-135m-instruct",
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Answer questions from an FAQ with the cited entry, or refuse (questions from the
    arguments, else one per line of stdin). To serve it: `assistant: {faq: ...}` in the
    `lmforge serve` config."""
    import dataclasses

    from lmforge.assistant.assistant import (
        DEFAULT_THRESHOLD,
        build_assistant,
        grounded_request,
        open_assistant,
    )
    from lmforge.models.catalogue import covers_language
    from lmforge.registry.refs import resolve_model
    from lmforge.settings import get_settings

    if model is not None and faq is not None:
        raise LmforgeError("give --faq or --model, not both", "drop one of them")
    if model is not None and encoder is not None:
        raise LmforgeError(
            "--encoder cannot change a registered assistant's encoder (its threshold was tuned "
            "for it)",
            "drop --encoder, or run its recipe with another model.base",
        )
    registered = resolve_model(model, "assistant") if model is not None else None
    writer = resolve_model(decoder, "decoder") if generate else None  # before the FAQ is indexed
    asked = list(questions or []) or [line.strip() for line in sys.stdin if line.strip()]
    if not asked:
        raise LmforgeError("no question to answer", "pass questions as arguments or on stdin")
    cache_dir = get_settings().cache_dir
    if registered is not None:
        opened = open_assistant(registered.locate(cache_dir), cache_dir, threshold, top_k)
        assistant, top_k = opened.assistant, opened.top_k
    else:
        assistant = build_assistant(
            faq or "debian_faq",
            encoder=encoder or "multilingual-e5-small",
            threshold=DEFAULT_THRESHOLD if threshold is None else threshold,
        )
    answers = assistant.ask(asked, top_k or 3)
    if writer is not None:
        from lmforge.runtime.generation import GenerationEngine

        engine = GenerationEngine.from_folder(writer.locate(cache_dir), "int8")
        try:
            for i, a in enumerate(answers):
                if a.answered and covers_language(decoder, a.language):
                    prompt, params = grounded_request(engine, a, max_tokens=160)
                    text = engine.generate(prompt, params, truncate=True).text.strip()
                    answers[i] = dataclasses.replace(a, generated=text)
        finally:
            engine.close()
    if json_output:
        _print_json([a.to_json() for a in answers])
        return
    for a in answers:
        out.print(f"[bold]Q:[/bold] {a.question}", highlight=False)
        if a.answered:
            best = a.hits[0]
            out.print(f"[bold]A:[/bold] {a.text}", highlight=False)
            out.print(f"   — {best.entry.citation} (score {best.score:.3f})", highlight=False)
            if a.generated:
                out.print(f"[bold]Written answer:[/bold] {a.generated}", highlight=False)
        else:
            out.print(f"[bold]A:[/bold] {a.text}", highlight=False)
            out.print(
                f"   (best match {a.hits[0].entry.citation} at {a.hits[0].score:.3f}, under "
                f"the threshold {a.threshold:.3f})",
                highlight=False,
            )
        out.print()


def main() -> None:
    # Deprecation notices between transformers and peft are for their developers, not our users.
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    try:
        app(standalone_mode=False)
    except LmforgeError as exc:
        if _state["debug"]:
            raise
        err.print(f"[red]error:[/red] {exc.message}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(130)
    except Exception as exc:
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
