"""The models a server holds: loaded versions, each behind its own batcher, and the aliases
(bare names) that resolve to the version in production.

A request names ``name`` (its production version, else its latest) or ``name:vN`` (pinned).
Promotion loads the new version first and then points the alias at it in one step on the event
loop; requests already queued on the old version finish there, so nothing in flight fails. Each
replica re-reads the production versions every ``refresh_seconds``, so a promotion made through
one replica (or the CLI) reaches all of them.

Over 400 lines because it is one class: loading, eviction, promotion and the model metrics all
work on the pool's maps and locks, and would only pass them around if split. Which model a
reference names is decided in lmforge.registry.refs, not here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.assistant.assistant import build_assistant, open_assistant
from lmforge.assistant.faq import load_faq
from lmforge.errors import LmforgeError, ModelNotFoundError, ModelUnavailableError
from lmforge.models.catalogue import covers_language
from lmforge.models.meta import (
    ClassificationMeta,
    SimilarityMeta,
    read_model_meta,
    require_classifier,
)
from lmforge.progress import LoggingProgress
from lmforge.registry import ModelVersion, Registry
from lmforge.registry.refs import ResolvedModel, resolve_model
from lmforge.registry.store import parse_ref
from lmforge.runtime.embedder import Embedder
from lmforge.runtime.generation import GenerationEngine
from lmforge.runtime.multitask import MultitaskPredictor
from lmforge.runtime.predictor import Predictor
from lmforge.serve.batcher import DynamicBatcher
from lmforge.serve.config import ServeConfig
from lmforge.serve.limits import ApiError, RateLimiter
from lmforge.serve.metrics import ServeMetrics
from lmforge.serve.unavailable import UnavailableModels, files_stamp
from lmforge.settings import Settings

logger = logging.getLogger("lmforge.serve")
BACKGROUND_NICE = 10
# Eviction weighs each loaded model's requests, each counting half as much per minute of age:
# a model in steady use outweighs one requested once, and an idle one fades out (LRU-like).
USE_HALF_LIFE_S = 60.0


def background_priority() -> None:
    """Lower the calling thread's CPU priority (Linux; elsewhere a no-op).

    Inference threads (the batcher's, and the ones ONNX Runtime or torch start from it) run at
    this priority so that the event loop, which parses requests, answers 429s and sends results,
    is never starved by them: it needs a sliver of a core, and needs it at once.
    """
    if hasattr(os, "setpriority") and sys.platform == "linux":
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)


class ModelChoiceError(LmforgeError):
    """The request left out which model to use, and the server has no single default."""


def check_served_models(config: ServeConfig, settings: Settings | None = None) -> None:
    """The assistant and the decoders a config names exist and are of their kind, and the
    assistant's FAQ is readable: checked before the server starts (nothing is loaded or
    converted), so that a typo fails in one line instead of in the log of a running server."""
    if config.assistant is not None and config.assistant.model is not None:
        resolve_model(config.assistant.model, "assistant", settings)
    elif config.assistant is not None and config.assistant.faq is not None:
        load_faq(config.assistant.faq)  # a missing, empty or malformed FAQ: one line, now
    for ref in config.generation.models:
        resolve_model(ref, "decoder", settings)


@dataclass(frozen=True)
class _Loaded:
    """What loading produces, in a thread, before the event loop gives it a batcher."""

    name: str
    version: int | None
    backend: str
    run: Callable[[list[str]], Sequence[Any]]
    kind: str = "classifier"
    tasks: tuple[str, ...] = ()  # a multi-task version's sub-tasks (its run answers them all)


@dataclass
class ServedModel:
    """One loaded version (or catalogue encoder) and the batcher in front of it."""

    ref: str  # name:vN, or the catalogue name
    name: str
    version: int | None
    backend: str
    batcher: DynamicBatcher[Any]
    kind: str  # classifier, multitask or embedder
    tasks: tuple[str, ...] = ()  # multitask: its sub-tasks, in order

    @property
    def public_ref(self) -> str:
        """How responses name it: NAME:vN, or the catalogue name."""
        return f"{self.name}:v{self.version}" if self.version is not None else self.name


@dataclass
class ServedDecoder:
    """A decoder behind its continuous-batching generation engine."""

    name: str
    engine: GenerationEngine
    weights: str
    context: int
    created: int  # unix time it was loaded, for the OpenAI model listing


class ModelPool:
    def __init__(
        self,
        registry: Registry,
        settings: Settings,
        config: ServeConfig,
        executor: Executor,
        metrics: ServeMetrics,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.config = config
        self.executor = executor
        self.metrics = metrics
        self.loaded: OrderedDict[str, ServedModel] = OrderedDict()  # LRU order
        self._use: dict[str, tuple[float, float]] = {}  # key -> (decayed request count, when)
        per_minute = config.limits.model_loads_per_minute
        self._load_limiter = RateLimiter(
            per_minute / 60 if per_minute is not None else None,
            max(1, int(per_minute or 1)),
        )
        self.aliases: dict[str, str] = {}  # name -> name:vN in production (else latest)
        self._locks: dict[str, asyncio.Lock] = {}
        self.unavailable = UnavailableModels()  # versions whose last load failed, and why
        self._refresh: asyncio.Task[None] | None = None
        self.assistant: ServedModel | None = None
        self.decoders: dict[str, ServedDecoder] = {}
        self.ready = False

    # --- start and stop -------------------------------------------------------------------

    async def start(self) -> None:
        refs = self.config.models
        if refs is None:
            versions = await asyncio.to_thread(self.registry.list)
            # similarity models answer /v1/embed, loaded on first use
            refs = sorted({v.name for v in versions if v.task == "classification"})
        for ref in refs:
            try:
                await self.classifier(ref)
            except LmforgeError as exc:  # one damaged version must not keep the others down
                logger.error("not serving %s: %s", ref, exc.message)
        for ref in self.config.generation.models:
            try:
                await self._start_decoder(ref)
            except LmforgeError as exc:
                logger.error("not serving decoder %s: %s", ref, exc.message)
        if self.config.assistant is not None:
            await self._start_assistant()
        self.ready = True
        self._refresh = asyncio.get_running_loop().create_task(self._refresh_forever())

    async def close(self) -> None:
        """Finish every queued request, then stop the batchers."""
        if self._refresh is not None:
            self._refresh.cancel()
        served = [*self.loaded.values(), *([self.assistant] if self.assistant else [])]
        await asyncio.gather(
            *(m.batcher.close() for m in served),
            *(asyncio.to_thread(d.engine.close) for d in self.decoders.values()),
        )

    # --- resolution -----------------------------------------------------------------------

    async def classifier(self, ref: str | None, requester: str | None = None) -> ServedModel:
        """The loaded model a request's ``model`` field names (loading it on first use; a
        ``requester`` — the caller's key — may load only ``limits.model_loads_per_minute``)."""
        if ref is None:
            if not self.aliases:
                raise ModelChoiceError(
                    "this server serves no model yet, so the request must name one",
                    'set "model" to a registered NAME[:VERSION] (see GET /v1/models)',
                )
            if len(self.aliases) > 1:
                raise ModelChoiceError(
                    "this server holds several models, so the request must name one",
                    f'set "model" to one of {", ".join(sorted(self.aliases))}',
                )
            ref = next(iter(self.aliases))
        name, version = parse_ref(ref)
        if version is None and name in self.aliases:
            return self._touch(self.aliases[name])
        if version is not None and version.removeprefix("v").isdigit():
            pinned = f"{name}:v{int(version.removeprefix('v'))}"
            if pinned in self.loaded:
                return self._touch(pinned)
        found = await asyncio.to_thread(self.registry.get, ref)
        served = await self._load(
            found.ref, lambda: self._load_classifier(found), found.path, requester
        )
        if version is None:
            self._point(name, served)
        return self._touch(served.ref)

    async def embedder(self, ref: str, requester: str | None = None) -> ServedModel:
        """A catalogue encoder by name, or a registered similarity or classification version's
        encoder (never a folder: a request must not choose a path on the server); loads are
        limited per ``requester`` as for :meth:`classifier`."""
        key = f"embed:{ref}"
        if key in self.loaded:
            return self._touch(key)
        found = await asyncio.to_thread(
            resolve_model,
            ref,
            ("encoder", "classifier"),
            self.settings,
            registry=self.registry,
            folders=False,
        )
        version = found.version
        if version is None:  # a catalogue encoder
            served = await self._load(
                key, lambda: self._load_catalogue_embedder(found), requester=requester
            )
        else:
            served = await self._load(
                f"embed:{found.ref}",
                lambda: self._load_version_embedder(version),
                version.path,
                requester,
            )
        return self._touch(served.ref)

    def decoder(self, ref: str | None) -> ServedDecoder:
        """The served decoder a generation request names (or the only one)."""
        if ref is None and len(self.decoders) == 1:
            return next(iter(self.decoders.values()))
        found = self.decoders.get(ref or "")
        if found is None:
            served = (
                ", ".join(sorted(self.decoders)) or "none (add generation.models to the config)"
            )
            raise ModelNotFoundError(
                f"no decoder '{ref}' on this server" if ref else "the request names no model",
                f"set model to a served decoder: {served}",
            )
        return found

    def assistant_decoder(self, language: str) -> ServedDecoder | None:
        """The decoder that writes the assistant's answers in a language: the first of
        generation.models that covers it (e.g. smollm2-135m-instruct for English, then
        gemma3-270m for Chinese), or none."""
        covering = (ref for ref in self.config.generation.models if covers_language(ref, language))
        return next((self.decoders[ref] for ref in covering if ref in self.decoders), None)

    async def _start_decoder(self, ref: str) -> None:
        generation = self.config.generation
        found = await asyncio.to_thread(
            resolve_model, ref, "decoder", self.settings, registry=self.registry
        )

        def build() -> GenerationEngine:
            return GenerationEngine.from_folder(
                # a catalogue decoder is converted once (a minute): the log says so as it goes
                found.locate(self.settings.cache_dir, LoggingProgress(logger)),
                generation.weights,
                max_batch=generation.max_batch,
                max_waiting=generation.max_waiting,
                max_context=generation.max_context,
                prefix_cache=generation.prefix_cache,
                attention=generation.attention,
                thread_init=background_priority,
                progress=LoggingProgress(logger),
            )

        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(1, initializer=background_priority) as loader:
            engine = await loop.run_in_executor(loader, build)
        name = ref  # as requests name it: the catalogue name, the folder or the registered NAME
        self.decoders[name] = ServedDecoder(
            name, engine, generation.weights, engine.context, int(time.time())
        )
        self.metrics.model_info.labels(name, "", "decoder", f"torch-{generation.weights}", "").set(
            1
        )
        logger.info(
            "decoder %s ready (%s, %d-token context)", name, generation.weights, engine.context
        )

    async def _start_assistant(self) -> None:
        """The FAQ assistant, batched like a model (its questions are embedded together): a
        registered one, or one built over an FAQ source at start."""
        config = self.config.assistant
        assert config is not None
        version = None
        if config.model is not None:
            found = await asyncio.to_thread(
                resolve_model, config.model, "assistant", self.settings, registry=self.registry
            )
            version = found.version
        given = config.model_fields_set

        def build() -> _Loaded:
            if version is not None:
                opened = open_assistant(
                    version.path,
                    self.settings.cache_dir,
                    threshold=config.threshold if "threshold" in given else None,
                    top_k=config.top_k if "top_k" in given else None,
                )
                assistant, top_k, encoder = opened.assistant, opened.top_k, opened.encoder
            else:
                assert config.faq is not None
                assistant = build_assistant(
                    config.faq,
                    encoder=config.encoder,
                    threshold=config.threshold,
                    cache_dir=self.settings.cache_dir,
                )
                top_k, encoder = config.top_k, config.encoder
            return _Loaded(
                "assistant",
                version.version if version else None,
                encoder,
                lambda questions: assistant.ask(questions, top_k),
                "assistant",
            )

        self.assistant = await self._serve(build, "assistant")
        logger.info("assistant ready over %s", version.ref if version else config.faq)

    def _touch(self, key: str) -> ServedModel:
        self.loaded.move_to_end(key)
        self._use[key] = (self._weight(key) + 1, time.monotonic())
        return self.loaded[key]

    def _weight(self, key: str) -> float:
        """The model's requests, each halved per ``USE_HALF_LIFE_S`` since."""
        count, stamp = self._use.get(key, (0.0, 0.0))
        return count * math.exp2(-(time.monotonic() - stamp) / USE_HALF_LIFE_S)

    # --- loading ----------------------------------------------------------------------------

    async def _load(
        self,
        key: str,
        build: Callable[[], _Loaded],
        folder: Path | None = None,
        requester: str | None = None,
    ) -> ServedModel:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:  # two first requests for one model load it once
            if key not in self.loaded:
                self.loaded[key] = await self._attempt(key, build, folder, requester=requester)
                await self._evict(keep=key)
        return self.loaded[key]

    def _check_load_rate(self, key: str, requester: str) -> None:
        """A load costs seconds of CPU and may unload another client's model: each caller gets
        ``limits.model_loads_per_minute`` of them (429 beyond)."""
        wait = self._load_limiter.check(requester)
        if wait is not None:
            per_minute = self.config.limits.model_loads_per_minute
            raise ApiError(
                429,
                f"{key} is not loaded, and this key has used its {per_minute:g} model loads "
                "per minute (limits.model_loads_per_minute) — retry after the Retry-After "
                "seconds, or use a model that is loaded (GET /v1/models)",
                "load_rate_limited",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )

    async def _attempt(
        self,
        key: str,
        build: Callable[[], _Loaded],
        folder: Path | None,
        again: bool = False,
        requester: str | None = None,
    ) -> ServedModel:
        """Build ``key``, recording a failure as the 503 to answer until ``folder``'s files
        change (or ``again``, the admin reload, asks for a new attempt regardless). A known
        failure is answered before the load rate is charged: it costs no load."""
        stamp = await asyncio.to_thread(files_stamp, folder) if folder is not None else None
        if not again:
            self.unavailable.check(key, stamp)
        if requester is not None:
            self._check_load_rate(key, requester)
        try:
            served = await self._serve(build, key)
        except (ModelNotFoundError, ModelChoiceError):
            raise  # the request's mistake, not the version's
        except Exception as exc:  # any failure to load leaves the others serving
            raise self.unavailable.record(key, stamp, exc) from exc
        self.unavailable.forget(key)
        return served

    async def _serve(self, build: Callable[[], _Loaded], key: str) -> ServedModel:
        """Build in a background-priority thread (seconds of disk and CPU, off the loop; the
        threads the backend starts there inherit the priority), then put a batcher in front."""
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(1, initializer=background_priority) as loader:
            loaded = await loop.run_in_executor(loader, build)
        served = ServedModel(
            key,
            loaded.name,
            loaded.version,
            loaded.backend,
            self._batcher(loaded.run, key),
            loaded.kind,
            loaded.tasks,
        )
        logger.info("loaded %s (%s)", key, served.backend)
        self._publish(served, alias="")
        return served

    def _batcher(self, run: Callable[[list[str]], Sequence[Any]], name: str) -> DynamicBatcher[Any]:
        batching = self.config.batching
        sizes = self.metrics.batch_size.labels(name)
        durations = self.metrics.inference.labels(name)

        def on_batch(rows: int, seconds: float) -> None:
            sizes.observe(rows)
            durations.observe(seconds)

        return DynamicBatcher(
            run,
            self.executor,
            max_batch=batching.max_batch,
            max_wait_ms=batching.max_wait_ms,
            max_queue=batching.max_queue,
            on_batch=on_batch,
        )

    def _load_classifier(self, version: ModelVersion) -> _Loaded:
        if version.task == "multitask":  # every head from one encoder pass; torch only
            multi = MultitaskPredictor(version.path, batch_size=self.config.batching.max_batch)
            run = multi.predict_tasks
            return _Loaded(
                version.name, version.version, multi.backend, run, "multitask", tuple(multi.tasks)
            )
        if version.task != "classification":
            raise ModelChoiceError(
                f"{version.ref} is a {version.task} model, not a classifier",
                "embed with it through POST /v1/embed",
            )
        meta = require_classifier(read_model_meta(version.path), version.path)
        backend = self.config.backend or meta.backend
        predictor = Predictor(
            version.path, backend=backend, batch_size=self.config.batching.max_batch
        )
        return _Loaded(version.name, version.version, backend, predictor.predict)

    def _load_version_embedder(self, version: ModelVersion) -> _Loaded:
        meta = read_model_meta(version.path)  # resolve_model let only these two tasks through
        if not isinstance(meta, SimilarityMeta | ClassificationMeta):
            raise ModelUnavailableError(
                f"{version.ref}'s lmforge.json says task {meta.task}, its registry row "
                f"{version.task}",
                "re-register the version",
            )
        embedder = Embedder(version.path, max_length=meta.max_length, text_prefix=meta.text_prefix)
        return _Loaded(
            version.name, version.version, "torch-fp32", _rows(embedder.embed), "embedder"
        )

    def _load_catalogue_embedder(self, found: ResolvedModel) -> _Loaded:
        embedder = Embedder(found.locate(self.settings.cache_dir), text_prefix=found.text_prefix)
        return _Loaded(found.ref, None, "torch-fp32", _rows(embedder.embed), "embedder")

    async def _evict(self, keep: str) -> None:
        """Unload, beyond ``max_loaded``, the least used versions that no alias points at —
        never ``keep``, the one just loaded for a request. "Least used" counts requests with
        a decay (see ``USE_HALF_LIFE_S``), so one request for a new model never unloads a
        model in steady use, and ties go to the least recently used."""
        spared = {*self.aliases.values(), keep}
        while len(self.loaded) > self.config.max_loaded:
            candidates = [k for k in self.loaded if k not in spared]  # oldest use first
            if not candidates:
                return
            victim = min(candidates, key=self._weight)
            self._use.pop(victim, None)
            served = self.loaded.pop(victim)
            self._unpublish(served)
            await served.batcher.close()  # its queued requests still finish
            logger.info("unloaded %s", victim)

    # --- promotion and refresh --------------------------------------------------------------

    async def promote(self, ref: str) -> ModelVersion:
        """Make a version production once it loads (the registry is left unchanged when it does
        not); a classifier is then served under its bare name."""
        version = await asyncio.to_thread(self.registry.get, ref)
        await self._check(version)
        promoted = (await asyncio.to_thread(self.registry.promote, version.ref)).version
        if promoted.task == "classification":
            await self.follow(promoted.name)
        return promoted

    async def _check(self, version: ModelVersion) -> None:
        """Load a version completely: classifier and similarity versions into the pool (the
        instance then served), decoders and assistants — served only from the config — in a
        background thread, as ``lmforge models promote`` checks them."""
        if version.task == "classification":
            await self._load(version.ref, lambda: self._load_classifier(version), version.path)
        elif version.task == "similarity":
            await self.embedder(version.ref)
        else:
            # Imported here: the tasks package pulls in training and compression (transformers,
            # pandas), seconds the server's start must not pay for a rare promotion.
            from lmforge.tasks.promote import check_version

            await asyncio.to_thread(check_version, version, self.settings)

    async def reload(self, ref: str) -> ServedModel:
        """Load a registered version again from its files as they are now (after a fix): a
        failed version becomes available, a loaded one is replaced — its queued requests finish
        on the old instance, and a failed reload leaves the old one serving."""
        version = await asyncio.to_thread(self.registry.get, ref)
        if version.task == "classification":
            key, build = version.ref, lambda: self._load_classifier(version)
        elif version.task == "similarity":
            key, build = f"embed:{version.ref}", lambda: self._load_version_embedder(version)
        else:
            raise ModelChoiceError(
                f"{version.ref} is a {version.task} model, which this server loads only at start",
                "restart the server to load it again",
            )
        async with self._locks.setdefault(key, asyncio.Lock()):
            served = await self._attempt(key, build, version.path, again=True)
            old = self.loaded.get(key)
            self.loaded[key] = served
            self.loaded.move_to_end(key)
            if old is not None:
                if _info_labels(old) != _info_labels(served):
                    self._unpublish(old)
                await old.batcher.close()
            for name, target in self.aliases.items():
                if target == key:
                    self._publish(served, alias=name)
            if old is None:
                await self._evict(keep=key)
        return served

    async def follow(self, name: str) -> None:
        """Point ``name`` at its current production (else latest) version, loading it first."""
        current = await asyncio.to_thread(self.registry.get, name)
        if self.aliases.get(name) == current.ref:
            return
        served = await self._load(current.ref, lambda: self._load_classifier(current), current.path)
        self._point(name, served)

    def _point(self, name: str, served: ServedModel) -> None:
        old = self.aliases.get(name)
        self.aliases[name] = served.ref
        if old and old in self.loaded and old != served.ref:
            self._publish(self.loaded[old], alias="")
            logger.info("%s now serves %s (was %s)", name, served.ref, old)
        self._publish(served, alias=name)

    async def forget(self, ref: str) -> None:
        """Stop serving a deleted version ``NAME:vN``: first point an alias that used it at the
        name's current version (or drop the alias when none is left), so no request is routed
        to it, then unload it as a classifier and as an embedder (queued requests finish)."""
        for name, current in list(self.aliases.items()):
            if current != ref:
                continue
            try:
                await self.follow(name)
            except ModelNotFoundError:  # its last version was deleted
                del self.aliases[name]
        for key in (ref, f"embed:{ref}"):
            served = self.loaded.pop(key, None)
            if served is not None:
                self._unpublish(served)
                await served.batcher.close()
                logger.info("unloaded deleted %s", key)

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.refresh_seconds)
            for name in list(self.aliases):
                try:
                    await self.follow(name)
                except ModelUnavailableError:
                    pass  # logged when it failed; tried again once its files change
                except Exception as exc:  # a bad new version must not stop the old one serving
                    logger.warning("could not follow %s: %s", name, exc)

    # --- metrics ----------------------------------------------------------------------------

    def _publish(self, served: ServedModel, alias: str) -> None:
        self._unpublish(served)
        self.metrics.model_info.labels(*_info_labels(served), alias).set(1)

    def _unpublish(self, served: ServedModel) -> None:
        for alias in ["", *self.aliases]:
            with contextlib.suppress(KeyError):
                self.metrics.model_info.remove(*_info_labels(served), alias)

    def batchers(self) -> dict[str, DynamicBatcher[Any]]:
        """Each loaded model's batcher, by model key (what /metrics reads its gauges from)."""
        return {key: m.batcher for key, m in self.loaded.items()}

    def publish_generation_load(self) -> None:
        for name, served in self.decoders.items():
            for state, count in served.engine.load().items():
                self.metrics.sequences.labels(name, state).set(count)


def _info_labels(served: ServedModel) -> tuple[str, str, str, str]:
    version = str(served.version) if served.version is not None else ""
    return served.name, version, served.kind, served.backend


def _rows(embed: Callable[[Sequence[str]], np.ndarray]) -> Callable[[list[str]], list[list[float]]]:
    def run(texts: list[str]) -> list[list[float]]:
        return [row.tolist() for row in embed(texts)]

    return run
