"""Continuous-batching text generation: requests join and leave the running batch between steps.

One background thread owns the model and the KV cache. Each turn is one pass over the model:
a decoding step for every running sequence, with the prompts of newly admitted requests
prefilled into free slots in the same pass; each sequence gets its new text through a
callback. A prompt that starts like a recent sequence (the chat template's system prompt, the
earlier turns of a conversation) takes those positions' keys and values from the PrefixStore
and prefills only the rest. A finished, cancelled or disconnected sequence leaves at once and
its slot goes to the next waiting request, so eight clients do not wait for each other and a
slow one never holds the batch.

Sampling follows transformers' order (repetition penalty, temperature, top-k, top-p), so with
temperature 0 the tokens are exactly greedy ``generate()``'s.

The module is kept whole (about 550 lines, over the ~400 guideline) until the generation-speed
issue (24) settles the decoder backend, since its engine loop is what that issue reworks; the
request types and sampling could then move to a module of their own.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch

from lmforge.errors import LmforgeError
from lmforge.progress import ProgressReporter, SilentProgress
from lmforge.runtime.attention import prepare as prepare_attention
from lmforge.runtime.decoder import DecodeAttention, DecoderModel, load_decoder
from lmforge.runtime.int8 import WeightFormat
from lmforge.runtime.kv_cache import PrefixStore
from lmforge.runtime.logprobs import MAX_TOP_LOGPROBS, TokenLogprob, token_logprobs

__all__ = [
    "Completion",
    "EngineClosed",
    "EngineFull",
    "GenerationEngine",
    "GenerationError",
    "GenerationRequest",
    "SamplingParams",
    "TextDecoder",
]

logger = logging.getLogger(__name__)
FinishReason = Literal["stop", "length", "cancelled", "error"]


class GenerationError(LmforgeError):
    """A request the engine cannot run (too long, bad sampling values)."""


class EngineFull(Exception):
    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"generation queue full; retry after {retry_after_s:.2f} s")
        self.retry_after_s = retry_after_s


class EngineClosed(Exception):
    pass


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 means no top-k cut
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False  # run to max_tokens regardless (benchmarks: a fixed length)
    # None: no log-probabilities (nothing computed); k: each token's and the k likeliest
    logprobs: int | None = None
    # max_tokens was not asked for but defaulted: shrink it to the room the prompt leaves in
    # the context rather than refuse (OpenAI's behaviour when a request sets no max_tokens)
    fit_context: bool = False

    def check(self) -> None:
        """Raise GenerationError naming the first value out of range."""
        rules = (
            (self.max_tokens >= 1, "max_tokens must be at least 1"),
            (self.temperature >= 0, "temperature must be 0 (greedy) or more"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (self.top_k >= 0, "top_k must be 0 (off) or more"),
            (self.repetition_penalty > 0, "repetition_penalty must be above 0"),
            (all(self.stop), "stop strings must not be empty"),
            (
                self.logprobs is None or 0 <= self.logprobs <= MAX_TOP_LOGPROBS,
                f"logprobs must be between 0 and {MAX_TOP_LOGPROBS} alternatives",
            ),
        )
        for ok, problem in rules:
            if not ok:
                raise GenerationError(problem, "fix the value in the request")


class TextDecoder:
    """Token ids → text, incrementally: only text that can no longer change is released.

    Each step decodes only the tokens since the last complete character (with the text of the
    tokens before them, which it subtracts): the cost of a token does not grow with the answer,
    where decoding everything again each step would make a long answer quadratic. A multi-byte
    character split across tokens decodes to U+FFFD until its last byte arrives, and the tail
    that could still become a stop string is held back too.
    """

    def __init__(self, tokenizer: Any, stop: tuple[str, ...]) -> None:
        self.tokenizer = tokenizer
        self.stop = stop
        self.hold = max((len(s) for s in stop), default=1) - 1
        self.prefix = 0  # ids[prefix:read] are decoded already and give context to the next
        self.read = 0
        self.decoded = ""  # the text of ids[:read]
        self.sent = 0
        self.text = ""

    def _decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def push(self, ids: list[int], final: bool) -> tuple[str, bool]:
        """The new text to release for `ids` (all tokens so far), and whether a stop matched."""
        known = self._decode(ids[self.prefix : self.read])
        window = self._decode(ids[self.prefix :])
        if len(window) > len(known) and (final or not window.endswith("\ufffd")):
            self.decoded += window[len(known) :]
            self.prefix, self.read = self.read, len(ids)
        text = self.decoded  # at the end, with any unfinished character as it decodes
        stopped = False
        for stop in self.stop:
            at = text.find(stop, max(0, self.sent - len(stop)))
            if at != -1:
                text, stopped, final = text[:at], True, True
        end = len(text)
        if not final:
            end = max(self.sent, end - self.hold)
        delta = text[self.sent : end]
        self.sent, self.text = end, text[:end]
        return delta, stopped


@dataclass(eq=False)
class GenerationRequest:
    """One request's state; `on_text(delta, finish_reason)` is called from the engine thread
    with each new piece of text, the last call carrying the finish reason."""

    prompt: list[int]
    params: SamplingParams
    on_text: Callable[[str, FinishReason | None], None]
    decoder: TextDecoder
    generated: list[int] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    cancelled: bool = False
    submitted: float = field(default_factory=time.perf_counter)
    first_token_s: float | None = None  # time to first token
    cached_tokens: int = 0  # prompt positions taken from the prefix store, not computed
    generator: torch.Generator | None = None
    # with params.logprobs: one entry per generated token, each also passed to on_logprobs
    # (on the engine thread, before the text that token completes is delivered)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    on_logprobs: Callable[[TokenLogprob], None] | None = None

    def cancel(self) -> None:
        """Safe from any thread: the sequence leaves the batch before the next step."""
        self.cancelled = True

    @property
    def length(self) -> int:
        """Positions stored in the cache: the prompt and all generated tokens but the last."""
        return len(self.prompt) + len(self.generated) - 1


@dataclass
class Completion:
    text: str
    tokens: list[int]
    prompt_tokens: int
    finish_reason: FinishReason
    first_token_s: float
    logprobs: list[TokenLogprob] | None = None  # with params.logprobs: one per token


def _sample(logits: torch.Tensor, seqs: Sequence[GenerationRequest]) -> list[int]:
    """The next token of each sequence from its row of logits (rows, vocab), with its own
    sampling settings. Sampling rows share one softmax and one inverse-CDF draw: a uniform
    number per row from the sequence's own generator (so a seed gives the same tokens alone or
    batched) against the cumulative probabilities — `torch.multinomial` costs ~1.3 ms per
    49k-wide row here, this ~0.2."""
    logits = logits.clone()
    for row, seq in zip(logits, seqs, strict=True):
        p = seq.params
        if p.repetition_penalty != 1.0:
            seen = torch.tensor(sorted(set(seq.prompt) | set(seq.generated)))
            score = row[seen]
            row[seen] = torch.where(
                score < 0, score * p.repetition_penalty, score / p.repetition_penalty
            )
    tokens = logits.argmax(-1).tolist()
    sampled = [i for i, seq in enumerate(seqs) if seq.params.temperature > 0]
    if not sampled:
        return tokens
    rows = logits[sampled]
    rows /= torch.tensor([seqs[i].params.temperature for i in sampled]).unsqueeze(1)
    for row, i in zip(rows, sampled, strict=True):
        p = seqs[i].params
        if 0 < p.top_k < row.numel():
            kth = torch.topk(row, p.top_k).values[-1]
            row.masked_fill_(row < kth, float("-inf"))
        if p.top_p < 1.0:
            ordered, order = torch.sort(row, descending=True)
            probs = ordered.softmax(-1)
            # drop a token when the ones before it already cover top_p (the first always stays)
            drop = probs.cumsum(-1) - probs > p.top_p
            row.index_fill_(0, order[drop], float("-inf"))
    cumulative = rows.softmax(-1).cumsum(-1)
    # u in (0, 1]: a token of probability 0 can never be the first to reach u × total
    u = torch.cat([1 - torch.rand(1, generator=seqs[i].generator) for i in sampled])
    drawn = torch.searchsorted(cumulative, (u.unsqueeze(1) * cumulative[:, -1:]).contiguous())
    for i, token in zip(
        sampled, drawn.clamp(max=rows.shape[1] - 1).flatten().tolist(), strict=True
    ):
        tokens[i] = token
    return tokens


class GenerationEngine:
    """Owns a decoder and its cache; `submit` from any thread, results arrive by callback."""

    def __init__(
        self,
        model: DecoderModel,
        tokenizer: Any,
        *,
        max_batch: int = 8,
        max_waiting: int = 64,
        max_context: int | None = None,
        prefix_cache: int = 2048,
        thread_init: Callable[[], None] | None = None,
        progress: ProgressReporter | None = None,
    ) -> None:
        """`prefix_cache`: positions of finished sequences kept for reuse (0: none); `progress`
        hears about the preparation before the first request."""
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.max_waiting = max_waiting
        self.context = min(model.config.context, max_context or model.config.context)
        self.eos_ids = _eos_ids(tokenizer, model)
        self.cache = model.new_cache(max_batch)
        if model.attention == "kernel":
            (progress or SilentProgress()).note(
                "preparing the attention kernel (compiled on first use, then read from disk)"
            )
            prepare_attention()  # seconds on first use: before serving, not in a request
        self.prefixes = PrefixStore(prefix_cache)
        self.running: list[GenerationRequest] = []
        self.waiting: collections.deque[GenerationRequest] = collections.deque()
        self.steps = 0
        self.tokens_out = 0
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self._step_s = 0.05  # moving average of a decoding step, for Retry-After
        self._lock = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(
            target=self._loop, args=(thread_init,), name="lmforge-generate", daemon=True
        )
        self._thread.start()

    @classmethod
    def from_folder(
        cls,
        folder: Path,
        fmt: WeightFormat = "fp32",
        attention: DecodeAttention = "kernel",
        progress: ProgressReporter | None = None,
        **kwargs: Any,
    ) -> GenerationEngine:
        """An engine over the decoder in `folder`; `progress` hears what loading does."""
        calibrating = "; calibrating int8 on fixed texts" if fmt == "int8" else ""
        (progress or SilentProgress()).note(f"loading {Path(folder).name} ({fmt}{calibrating})")
        model, tokenizer = load_decoder(folder, fmt)
        model.attention = attention
        return cls(model, tokenizer, progress=progress, **kwargs)

    # ------------------------------------------------------------------ public, any thread

    def encode_chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """The prompt token ids of a chat, through the tokenizer's chat template."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise GenerationError(
                "this model has no chat template",
                "use the completions route with a plain prompt",
            )
        ids = self.tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, tokenize=True, return_dict=False
        )
        return list(ids)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def submit(
        self,
        prompt: list[int],
        params: SamplingParams,
        on_text: Callable[[str, FinishReason | None], None],
        *,
        truncate: bool = False,
        on_logprobs: Callable[[TokenLogprob], None] | None = None,
    ) -> GenerationRequest:
        """Queue a request; raises GenerationError (too long, bad values), EngineFull, EngineClosed.

        With `truncate`, a prompt too long for the context keeps its last tokens instead. With
        `params.logprobs`, `on_logprobs` gets each token's entry (see GenerationRequest).
        """
        params.check()
        if params.fit_context and prompt:
            fitted = min(params.max_tokens, self.context - min(len(prompt), self.context - 1))
            params = replace(params, max_tokens=fitted, fit_context=False)
        room = self.context - params.max_tokens
        if room < 1:
            raise GenerationError(
                f"max_tokens {params.max_tokens} leaves no room for a prompt in the "
                f"{self.context}-token context",
                f"ask for at most {self.context - 1} tokens",
            )
        if not prompt:
            raise GenerationError("the prompt is empty", "send at least one token of text")
        if len(prompt) > room:
            if not truncate:
                raise GenerationError(
                    f"prompt of {len(prompt)} tokens plus max_tokens {params.max_tokens} exceeds "
                    f"the {self.context}-token context",
                    "shorten the prompt, lower max_tokens, or ask for truncation",
                )
            prompt = prompt[-room:]
        seq = GenerationRequest(prompt, params, on_text, TextDecoder(self.tokenizer, params.stop))
        seq.on_logprobs = on_logprobs
        if params.seed is not None:
            seq.generator = torch.Generator().manual_seed(params.seed)
        with self._lock:
            if self._closed:
                raise EngineClosed
            if len(self.waiting) >= self.max_waiting:
                ahead = len(self.waiting) / max(self.max_batch, 1)
                raise EngineFull(max(0.1, ahead * params.max_tokens * self._step_s / 4))
            self.waiting.append(seq)
            self._lock.notify()
        return seq

    def generate(
        self,
        prompt: list[int],
        params: SamplingParams,
        on_text: Callable[[str, FinishReason | None], None] | None = None,
        **kwargs: Any,
    ) -> Completion:
        """Blocking convenience for one request (it still shares the batch with others);
        `on_text` sees the text as it is produced."""
        done = threading.Event()

        def deliver(delta: str, reason: FinishReason | None) -> None:
            if on_text is not None:
                on_text(delta, reason)
            if reason is not None:
                done.set()

        seq = self.submit(prompt, params, deliver, **kwargs)
        done.wait()
        assert seq.finish_reason is not None
        return Completion(
            seq.decoder.text,
            list(seq.generated),
            len(seq.prompt),
            seq.finish_reason,
            seq.first_token_s or 0.0,
            list(seq.logprobs) if params.logprobs is not None else None,
        )

    def load(self) -> dict[str, int]:
        """Sequences decoding and waiting; one that has finished is not running, even in the
        moment before its slot is freed (its keys and values are being stored)."""
        with self._lock:
            running = sum(1 for seq in self.running if seq.finish_reason is None)
            return {"running": running, "waiting": len(self.waiting)}

    def close(self, timeout: float | None = None) -> None:
        """Finish running and waiting requests, then stop the thread."""
        with self._lock:
            self._closed = True
            self._lock.notify()
        self._thread.join(timeout)

    # ------------------------------------------------------------------ engine thread

    def _loop(self, thread_init: Callable[[], None] | None) -> None:
        if thread_init is not None:
            thread_init()
        while True:
            with self._lock:
                while not self.running and not self.waiting:
                    if self._closed:
                        return
                    self.cache.reset()
                    self._lock.wait()
                admitted: list[GenerationRequest] = []
                while self.waiting and len(self.running) + len(admitted) < self.max_batch:
                    admitted.append(self.waiting.popleft())
            try:
                with torch.inference_mode():
                    self._step(admitted)
            except Exception:  # keep serving: fail what was running, not the engine
                logger.exception("generation step failed")
                for seq in [*self.running, *admitted]:
                    if seq.finish_reason is None:
                        self._finish(seq, "error", "")
                self.running = []

    def _step(self, admitted: list[GenerationRequest]) -> None:
        """One decoding step for the running sequences, with the admitted prompts prefilled in
        the same pass (they get their first token from it)."""
        for seq in admitted:
            if seq.cancelled:
                self._finish(seq, "cancelled", "")
        joining = [s for s in admitted if not s.cancelled]
        running = self.running
        if not running and not joining:
            return
        started = time.perf_counter()
        for slot, seq in enumerate(joining, start=len(running)):
            self._reuse(seq, slot)
        logits = self.model.step(
            self.cache,
            [s.length for s in running],
            [s.generated[-1] for s in running],
            [s.prompt[s.cached_tokens :] for s in joining],
            [s.cached_tokens for s in joining],
        )
        self.running = [*running, *joining]
        tokens = _sample(logits, self.running)
        entries = self._logprobs(logits, tokens)
        for i, (seq, token) in enumerate(zip(list(self.running), tokens, strict=True)):
            if seq.finish_reason is None:
                self._accept(seq, token, entries.get(i))
        self.steps += 1
        elapsed = time.perf_counter() - started
        self._step_s = 0.9 * self._step_s + 0.1 * elapsed
        self._compact()

    def _reuse(self, seq: GenerationRequest, slot: int) -> None:
        """Copy the stored keys and values of the prompt's longest known prefix into its slot.

        A seeded request is prefilled whole instead: reused positions were computed in another
        pass (another chunk of rows, and with int8 another activation scale), so their values
        differ from a fresh prefill's in the last bits, and that is enough to change a sampled
        token — the same seed and request would give another text once its prompt is stored.
        """
        if seq.params.seed is not None:
            self.prompt_tokens += len(seq.prompt)
            return
        shared, stored = self.prefixes.match(seq.prompt)
        if stored is not None:
            self.cache.write(slot, stored, shared)
            seq.cached_tokens = shared
        self.prompt_tokens += len(seq.prompt)
        self.cached_tokens += shared

    def _logprobs(self, logits: torch.Tensor, tokens: list[int]) -> dict[int, TokenLogprob]:
        """The entries of the rows whose sequences asked for log-probabilities (none: nothing
        is computed), from the raw logits the tokens were sampled from."""
        rows = [
            i
            for i, seq in enumerate(self.running)
            if seq.params.logprobs is not None and seq.finish_reason is None
        ]
        if not rows:
            return {}
        tops = [self.running[i].params.logprobs or 0 for i in rows]
        found = token_logprobs(logits, rows, [tokens[i] for i in rows], tops)
        return dict(zip(rows, found, strict=True))

    def _accept(self, seq: GenerationRequest, token: int, entry: TokenLogprob | None) -> None:
        if seq.cancelled:
            self._finish(seq, "cancelled", "")
            return
        if seq.first_token_s is None:
            seq.first_token_s = time.perf_counter() - seq.submitted
        self.tokens_out += 1
        if token in self.eos_ids and not seq.params.ignore_eos:
            delta, _ = seq.decoder.push(seq.generated, final=True)
            self._finish(seq, "stop", delta)
            return
        seq.generated.append(token)
        if entry is not None:  # the end-of-text token above is not part of the answer
            seq.logprobs.append(entry)
            if seq.on_logprobs is not None:
                with contextlib.suppress(Exception):  # as _deliver: a broken consumer
                    seq.on_logprobs(entry)
        at_limit = (
            len(seq.generated) >= seq.params.max_tokens
            or len(seq.prompt) + len(seq.generated) >= self.context
        )
        delta, stopped = seq.decoder.push(seq.generated, final=at_limit)
        if stopped:
            self._finish(seq, "stop", delta)
        elif at_limit:
            self._finish(seq, "length", delta)
        elif delta:
            self._deliver(seq, delta, None)

    def _finish(self, seq: GenerationRequest, reason: FinishReason, delta: str) -> None:
        seq.finish_reason = reason
        self._deliver(seq, delta, reason)

    def _deliver(self, seq: GenerationRequest, delta: str, reason: FinishReason | None) -> None:
        with contextlib.suppress(Exception):  # a broken consumer must not stop the others
            seq.on_text(delta, reason)

    def _compact(self) -> None:
        """Drop finished and cancelled sequences, moving the last running ones into their slots."""
        keep = []
        for seq in self.running:
            if seq.finish_reason is None and seq.cancelled:
                self._finish(seq, "cancelled", "")
            if seq.finish_reason is None:
                keep.append(seq)
        if len(keep) == len(self.running):
            return
        for slot, seq in enumerate(self.running):
            if seq.finish_reason is not None and self.prefixes.keeps(seq.length):
                tokens = [*seq.prompt, *seq.generated][: seq.length]
                self.prefixes.add(tokens, self.cache.read(slot, seq.length))
        for target, seq in enumerate(keep):
            source = self.running.index(seq)
            if source != target:
                self.cache.move(source, target, seq.length)
        self.running = keep


def _eos_ids(tokenizer: Any, model: DecoderModel) -> set[int]:
    ids: set[int] = set()
    for value in (getattr(model.config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list):
            ids.update(int(v) for v in value)
    return ids
