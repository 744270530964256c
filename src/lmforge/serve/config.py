"""The server's configuration: a typed, validated YAML file (``lmforge serve --config``).

Every limit has a safe default, so ``lmforge serve`` with no file is already bounded: requests
have a size, a count and a deadline, queues have a length, keys have a rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lmforge.finance.surge import SurgeConfig
from lmforge.monitor.alerts import AlertRule, Duration
from lmforge.recipe.loader import read_yaml, validate_config


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BatchingConfig(_Section):
    max_batch: int = Field(32, ge=1, le=1024, description="most rows one inference call takes")
    max_wait_ms: float = Field(
        5.0,
        ge=0,
        le=1000,
        description="longest a batch waits to fill, and only while the model is busy",
    )
    max_queue: int = Field(
        32,
        ge=1,
        description="rows waiting per model; beyond it requests get 429 at once (one batch "
        "waiting keeps the latency of accepted requests under overload)",
    )
    timeout_s: float = Field(30.0, gt=0, description="per-request deadline; past it, 504")


class LimitsConfig(_Section):
    max_body_bytes: int = Field(1_000_000, ge=1024, description="larger bodies get 413")
    max_inputs: int = Field(64, ge=1, description="texts per request; more get 422")
    max_chars: int = Field(10_000, ge=1, description="characters per text; longer get 422")
    rate_per_second: float | None = Field(
        100.0, gt=0, description="token-bucket refill per API key (per client without auth)"
    )
    burst: int = Field(200, ge=1, description="token-bucket size: requests allowed at once")
    model_loads_per_minute: float | None = Field(
        6.0,
        gt=0,
        description="loads of a model that is not in memory, per API key (per client without "
        "auth), so that one client cannot thrash the pool; beyond it 429 with Retry-After; "
        "null = off",
    )


class ConnectionsConfig(_Section):
    """Limits on the HTTP connection itself, checked before a request reaches a route (so
    before its key is checked): a client cannot hold memory or sockets by sending slowly."""

    max_header_bytes: int = Field(
        16_384, ge=1024, description="request line plus headers; larger get 431"
    )
    max_headers: int = Field(100, ge=8, description="header fields per request; more get 431")
    header_timeout_s: float = Field(
        10.0, gt=0, description="time to send a request's line and headers; past it, 408"
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="time to send a request's whole body; past it, 408"
    )
    keep_alive_s: int = Field(
        30,
        ge=1,
        description="an idle keep-alive connection is closed after this (keep it above a load "
        "balancer's idle timeout, so that the balancer closes first)",
    )
    max_concurrency: int = Field(
        1000,
        ge=1,
        description="open connections (or requests in progress) at once; a request beyond "
        "it gets 503 with Retry-After",
    )


class AuthConfig(_Section):
    enabled: bool = Field(True, description="off only for local use (`--no-auth`)")
    cache_seconds: float = Field(
        2.0, ge=0, description="how long a verified key is trusted before the database is asked"
    )


class LogConfig(_Section):
    sample_rate: float = Field(
        0.1,
        ge=0,
        le=1,
        description="with include_text, the share of predictions whose text is kept (every "
        "prediction is recorded, without its text)",
    )
    include_text: bool = Field(False, description="store the input text with a logged prediction")
    flush_seconds: float = Field(1.0, gt=0, description="how often logged rows are written")
    retention_days: float | None = Field(
        90, gt=0, description="rows older than this are deleted (hourly); null keeps them all"
    )


class AccessLogConfig(_Section):
    enabled: bool = Field(
        True, description="one JSON line per request on the lmforge.access logger"
    )
    file: Path | None = Field(None, description="append the lines to this file, not stderr")
    include_body: bool = Field(
        False, description="log the request body (its first 2000 bytes): the request text"
    )
    skip_paths: list[str] = Field(
        default_factory=lambda: ["/healthz", "/readyz", "/metrics"],
        description="paths not logged (probes and scrapes poll them every few seconds)",
    )


class AssistantConfig(_Section):
    model: str | None = Field(
        None,
        description="a registered assistant (NAME[:VERSION], from an assistant recipe): its FAQ, "
        "encoder, tuned threshold and top_k; encoder/threshold/top_k given here override them",
    )
    faq: str | None = Field(
        None,
        description="or an FAQ source: debian_faq, chatterbot_support, or a CSV/JSON/JSONL file "
        "with question and answer columns",
    )
    encoder: str = Field("multilingual-e5-small", description="catalogue encoder to retrieve with")
    threshold: float | None = Field(
        None,
        ge=-1,
        le=1,
        description="answer only when the best entry's score (its best passage's cosine) is at "
        "least this, for questions in every language; default: the threshold tuned for each "
        "question language (with model: the registered ones)",
    )
    top_k: int = Field(3, ge=1, le=20, description="entries returned as sources")
    generate: bool = Field(
        False,
        description="also write an answer from the top entries (retrieval-augmented) with the "
        "first decoder in generation.models, for questions in a language it covers",
    )
    generate_max_tokens: int = Field(160, ge=1, le=1024, description="length of that answer")

    @model_validator(mode="after")
    def _one_source(self) -> AssistantConfig:
        if (self.model is None) == (self.faq is None):
            raise ValueError(
                "assistant needs exactly one of 'model' (a registered assistant) or 'faq' "
                "(an FAQ source)"
            )
        if self.model is not None and "encoder" in self.model_fields_set:
            raise ValueError(
                "assistant.encoder cannot change a registered assistant's encoder (its threshold "
                "was tuned for it): run its recipe with another model.base"
            )
        return self


class GenerationConfig(_Section):
    models: list[str] = Field(
        default_factory=list,
        description="decoders served at /v1/chat/completions and /v1/completions, loaded at "
        "start: catalogue names (smollm2-135m-instruct) or local Hugging Face causal-LM folders",
    )
    weights: Literal["fp32", "bf16", "int8"] = Field(
        "int8",
        description="weight format: int8 (fastest on CPU), bf16, or fp32 (exactly the "
        "checkpoint's numbers)",
    )
    max_batch: int = Field(8, ge=1, le=256, description="sequences decoded together")
    max_waiting: int = Field(
        64, ge=1, description="requests waiting for a free sequence slot; beyond it, 429"
    )
    max_context: int = Field(
        2048, ge=16, description="prompt plus generated tokens (capped at the model's window)"
    )
    prefix_cache: int = Field(
        2048,
        ge=0,
        description="positions (tokens) of finished sequences kept so that prompts starting "
        "the same way (system prompt, earlier turns) skip their prefill; 0 turns it off. "
        "SmolLM2-135M takes 46 KB per position",
    )
    attention: Literal["kernel", "sdpa"] = Field(
        "kernel",
        description="decoding rows' attention from two rows up: lmforge's kernel (reads each "
        "sequence's own positions once) or PyTorch's scaled_dot_product_attention (the "
        "reference, to compare)",
    )
    max_tokens: int = Field(1024, ge=1, description="the most tokens a request may ask for")
    default_max_tokens: int = Field(
        256, ge=1, description="when a request sets none; shrunk to the room its prompt leaves"
    )
    timeout_s: float = Field(
        300.0, gt=0, description="deadline of a whole non-streamed completion; past it, 504"
    )


class MonitorConfig(_Section):
    """The figures as Prometheus gauges and the alert rules, computed on a schedule (see
    docs/monitoring.md#alert-rules)."""

    interval: Duration = Field(
        timedelta(minutes=1), description="how often figures are computed and rules evaluated"
    )
    window: Duration = Field(
        timedelta(minutes=15), description="the trailing window the gauges show"
    )
    rules: list[AlertRule] = Field(default_factory=list, description="the alert rules")
    webhook_url: str | None = Field(
        None,
        pattern=r"^https?://\S+$",
        description="POST each firing and resolved alert here as JSON (http or https)",
    )
    webhook_timeout: float = Field(5.0, gt=0, le=60, description="seconds per webhook try")
    webhook_retries: int = Field(3, ge=0, le=10, description="webhook tries after the first")

    @model_validator(mode="after")
    def _check(self) -> MonitorConfig:
        if self.interval <= timedelta(0) or self.window <= timedelta(0):
            raise ValueError("monitor.interval and monitor.window must be positive durations")
        names = [rule.name for rule in self.rules]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"rule names must be unique: {', '.join(twice)} given twice")
        return self


class ExplainConfig(_Section):
    """POST /v1/explain, bounded so that explanations slow predictions only a little: they run
    in their own worker processes, at a lower CPU priority, on their own threads."""

    enabled: bool = Field(True, description="serve POST /v1/explain")
    max_tokens: int = Field(128, ge=2, description="tokens in an explained text; more get 422")
    max_steps: int = Field(
        64, ge=1, le=1024, description="integrated-gradients steps; more get 422"
    )
    concurrency: int = Field(
        1, ge=1, description="explanations computed at once (worker processes)"
    )
    threads: int = Field(1, ge=1, description="CPU threads each explanation worker may use")
    max_queue: int = Field(
        4, ge=0, description="explanations waiting beyond those running; beyond it, 429"
    )
    timeout_s: float = Field(60.0, gt=0, description="per-request deadline; past it, 504")


class FinanceConfig(_Section):
    """The finance monitor (``--finance MODEL``): /v1/finance/..., and the surge rule judged
    every ``interval`` (see docs/finance.md)."""

    model: str = Field(description="a registered negative/neutral/positive classifier")
    interval: Duration = Field(timedelta(minutes=1), description="how often the rule is judged")
    max_headlines: int = Field(256, ge=1, le=4096, description="headlines per request; more, 422")
    surge: SurgeConfig = SurgeConfig()


class ServeConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    models: list[str] | None = Field(
        None,
        description="model references to load at start; default: every registered model's "
        "production (else latest) version",
    )
    backend: str | None = Field(
        None, description="runtime backend for every model; default: each version's own"
    )
    max_loaded: int = Field(4, ge=1, description="model versions kept loaded at once")
    refresh_seconds: float = Field(
        5.0, gt=0, description="how often each replica re-reads which version is in production"
    )
    batching: BatchingConfig = BatchingConfig()
    limits: LimitsConfig = LimitsConfig()
    connections: ConnectionsConfig = ConnectionsConfig()
    auth: AuthConfig = AuthConfig()
    prediction_log: LogConfig = LogConfig()
    access_log: AccessLogConfig = AccessLogConfig()
    generation: GenerationConfig = GenerationConfig()
    explain: ExplainConfig = ExplainConfig()
    assistant: AssistantConfig | None = Field(
        None, description="serve POST /v1/assistant/ask over this FAQ (off when absent)"
    )
    monitor: MonitorConfig | None = Field(
        None, description="figures as gauges and alert rules on a schedule (off when absent)"
    )
    finance: FinanceConfig | None = Field(
        None, description="the finance monitor's routes and surge alerts (off when absent)"
    )
    graceful_timeout_s: float = Field(
        30.0, gt=0, description="on SIGTERM, how long in-flight requests may take to finish"
    )
    ui: bool = Field(True, description="serve the web console at /ui (off: --no-ui)")

    @model_validator(mode="after")
    def _queue_holds_a_batch(self) -> ServeConfig:
        if self.batching.max_queue < self.batching.max_batch:
            raise ValueError("batching.max_queue must be at least batching.max_batch")
        if self.assistant is not None and self.assistant.generate and not self.generation.models:
            raise ValueError(
                "assistant.generate needs a decoder: add one to generation.models "
                "(e.g. smollm2-135m-instruct)"
            )
        if self.generation.default_max_tokens > self.generation.max_tokens:
            raise ValueError("generation.default_max_tokens must be at most generation.max_tokens")
        return self


def load_serve_config(path: Path | None, **overrides: Any) -> ServeConfig:
    """The file's settings (or the defaults) with command-line overrides on top."""
    raw: Any = read_yaml(path, "server config") if path is not None else {}
    raw = raw if raw is not None else {}
    if isinstance(raw, dict):
        raw = {**raw, **{k: v for k, v in overrides.items() if v is not None}}
    return validate_config(ServeConfig, raw, str(path or "server config"), "host, port, ...")


def with_command_line(
    settings: ServeConfig,
    *,
    no_auth: bool = False,
    decoders: Sequence[str] = (),
    assistant: str | None = None,
    no_ui: bool = False,
    finance: str | None = None,
) -> ServeConfig:
    """``settings`` with ``lmforge serve``'s switches on top: ``no_auth`` turns keys off,
    ``decoders`` add to ``generation.models``, and ``assistant`` (a registered assistant) takes
    the config's assistant section's place — keeping its generation settings, dropping its FAQ;
    ``no_ui`` turns the web console off, and ``finance`` (a registered sentiment model) turns
    the finance monitor on, with the config's ``finance:`` settings where it has them."""
    if no_ui:
        settings = settings.model_copy(update={"ui": False})
    if no_auth:
        auth = settings.auth.model_copy(update={"enabled": False})
        settings = settings.model_copy(update={"auth": auth})
    if decoders:
        models = [*settings.generation.models, *decoders]
        generation = settings.generation.model_copy(update={"models": models})
        settings = settings.model_copy(update={"generation": generation})
    if assistant is not None:
        kept = settings.assistant
        section = AssistantConfig(
            model=assistant,
            generate=kept.generate if kept else False,
            generate_max_tokens=kept.generate_max_tokens if kept else 160,
        )
        settings = settings.model_copy(update={"assistant": section})
    if finance is not None:  # the config's finance settings, with this model
        monitor = settings.finance
        watched = (
            monitor.model_copy(update={"model": finance})
            if monitor
            else FinanceConfig(model=finance)
        )
        settings = settings.model_copy(update={"finance": watched})
    return settings
