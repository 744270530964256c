"""A registered classifier explained: integrated gradients, attention and occlusion.

:class:`Explainer` holds a version loaded twice over: its served backend (a :class:`Predictor`,
for the prediction and for occlusion, which only re-scores texts and so runs on any backend,
ONNX int8 included) and, loaded on first need, fp32 torch weights with eager attention for the
methods that need gradients or attention weights. Those weights are the version's own, or, for
a compressed version without them (ONNX only), the version it was compressed from; the result
names them (``explained_with``) and says whether they predict the served label (``agrees``).

Integrated gradients are Captum's ``LayerIntegratedGradients`` on the word-embedding layer.
The default baseline replaces every word token by ``[PAD]`` (``<pad>`` in SentencePiece models)
and keeps the special and prefix tokens, the length and the positions. [PAD] is the token the
model was taught to ignore (padding is always masked out), so it stands for "no word here";
[MASK] (``baseline="mask"``) instead means "some word here" to a masked-LM-pretrained encoder,
which fills it with a guess — attributions then measure the text against that guess. In the
tiny test model a [MASK] baseline was classified like the text itself, and every attribution
vanished with the logit difference.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tokenizers import Tokenizer

from lmforge.data.text import clean_text
from lmforge.errors import LmforgeError, ModelUnavailableError
from lmforge.explain.explanation import DEFAULT_STEPS, METHODS, Explanation, Method, WordScore
from lmforge.explain.words import Word, drop_word, group_tokens, word_scores
from lmforge.runtime import Predictor
from lmforge.runtime.backends import available_backends

#: Interpolated inputs per forward/backward pass: 32 steps run as two batched passes.
IG_BATCH = 16


class Explainer:
    """Explain texts as the version in ``folder`` (named ``ref``) classifies them on ``backend``
    (default: its registered one). ``torch_folder``/``torch_ref`` name the fp32 weights the
    gradient and attention methods use (default: the version's own, when it has them)."""

    def __init__(
        self,
        folder: Path,
        ref: str,
        *,
        backend: str | None = None,
        torch_folder: Path | None = None,
        torch_ref: str | None = None,
        threads: int | None = None,
        baseline: Literal["pad", "mask"] = "pad",
    ) -> None:
        self.baseline = baseline
        self.predictor = Predictor(folder, backend=backend, threads=threads)
        self.ref = ref
        if torch_folder is None and "torch-fp32" in available_backends(folder):
            torch_folder, torch_ref = folder, ref
        self.torch_folder = torch_folder
        self.torch_ref = torch_ref or ref
        meta = self.predictor.meta
        self.prefix = meta.text_prefix
        self._tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tok.no_padding()
        self._tok.enable_truncation(meta.max_length)
        self._model: Any = None
        self._full_tok: Tokenizer | None = None

    @property
    def labels(self) -> list[str]:
        return self.predictor.labels

    # --- the one entry point ------------------------------------------------------------------

    def explain(
        self,
        text: str,
        method: Method = "ig",
        *,
        steps: int | None = None,
        target: str | None = None,
        max_tokens: int | None = None,
    ) -> Explanation:
        """One text's explanation by ``method``; ``target`` is the label to explain (default:
        the predicted one). ``max_tokens`` refuses a longer text (a server's bound)."""
        if method not in METHODS:
            raise LmforgeError(f"unknown method '{method}'", f"choose one of {', '.join(METHODS)}")
        if target is not None and target not in self.labels:
            raise LmforgeError(
                f"unknown target label '{target}' for {self.ref}",
                f"choose one of its labels: {', '.join(self.labels)}",
            )
        if steps is not None and method != "ig":
            # Silently ignored, a user would believe more steps made the answer more exact.
            raise LmforgeError(
                f"steps apply to integrated gradients only, not to {method}",
                "leave steps out, or use method ig",
            )
        steps = DEFAULT_STEPS if steps is None else steps
        if steps < 1:
            raise LmforgeError(f"steps must be at least 1, not {steps}", "pass --steps 32")
        cleaned = clean_text(text, self.predictor.cleaning)
        full = self.prefix + cleaned
        enc = self._tok.encode(full)
        if max_tokens is not None:
            # Counted before truncation at the model's max_length, so that the limit means what
            # it says whichever of the two is smaller.
            full_ids = self._untruncated().encode(full).ids if enc.overflowing else enc.ids
            count = len(full_ids)
            if count > max_tokens:
                raise LmforgeError(
                    f"the text has {count} tokens, over the limit of {max_tokens} for "
                    "explanations (explain.max_tokens)",
                    "explain a shorter text",
                )
        words, token_word = group_tokens(
            full, enc.offsets, enc.special_tokens_mask, len(self.prefix)
        )
        if not words:
            raise LmforgeError("the text has no words to explain", "pass a non-empty text")
        proba = self.predictor.predict_proba([cleaned])[0]
        best = int(proba.argmax())
        t = self.labels.index(target) if target is not None else best
        base: dict[str, Any] = {
            "model": self.ref,
            "backend": self.predictor.backend.name,
            "method": method,
            "text": cleaned,
            "label": self.labels[best],
            "score": float(proba[best]),
            "target": self.labels[t],
            "truncated": bool(enc.overflowing),
        }
        if method == "occlusion":
            scores = self.occlusion(cleaned, words, t)
            return Explanation(
                **base,
                explained_with=f"{self.ref} ({self.predictor.backend.name})",
                agrees=True,
                words=_scored(words, scores),
            )
        ids = np.asarray([enc.ids], dtype=np.int64)
        word_mask = np.asarray([[w is not None for w in token_word]])
        if method == "ig":
            token_scores, delta, diff, agrees = self.integrated_gradients(
                ids, word_mask, t, steps, best
            )
            return Explanation(
                **base,
                explained_with=f"{self.torch_ref} (torch-fp32)",
                agrees=agrees,
                words=_scored(words, word_scores(token_scores, token_word, len(words))),
                steps=steps,
                baseline=self.baseline_token,
                completeness_error=abs(delta),
                logit_difference=diff,
            )
        maps, agrees = self.attention_maps(ids, best)
        rollout = attention_rollout(maps)
        return Explanation(
            **base,
            explained_with=f"{self.torch_ref} (torch-fp32)",
            agrees=agrees,
            words=_scored(words, word_scores(rollout[0], token_word, len(words))),
            attention={"tokens": enc.tokens, "layers": maps, "rollout": rollout},
        )

    def token_map(self, cleaned: str) -> tuple[np.ndarray, list[int | None]]:
        """A cleaned text's token ids, shape (1, tokens), and each token's word (None for
        special and prefix tokens), as :meth:`explain` builds them."""
        full = self.prefix + cleaned
        enc = self._tok.encode(full)
        _, token_word = group_tokens(full, enc.offsets, enc.special_tokens_mask, len(self.prefix))
        return np.asarray([enc.ids], dtype=np.int64), token_word

    # --- the methods --------------------------------------------------------------------------

    def occlusion(self, cleaned: str, words: list[Word], target: int) -> np.ndarray:
        """Per word: the target's probability on the text minus on the text without that word,
        every variant scored in one batch by the served backend."""
        variants = [cleaned] + [drop_word(cleaned, w) for w in words]
        proba = self.predictor.predict_proba(variants)[:, target]
        return np.asarray(proba[0] - proba[1:], dtype=np.float64)

    def integrated_gradients(
        self, ids: np.ndarray, word_mask: np.ndarray, target: int, steps: int, served: int
    ) -> tuple[np.ndarray, float, float, bool]:
        """(per-token attribution, completeness delta, target-logit difference to the baseline,
        whether the torch weights predict the served label)."""
        import torch
        from captum.attr import LayerIntegratedGradients

        model = self.torch_model()
        inputs = torch.from_numpy(ids)
        baseline = torch.where(torch.from_numpy(word_mask), self.baseline_id, inputs)
        mask = torch.ones_like(inputs)

        def forward(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            logits: torch.Tensor = model(input_ids=input_ids, attention_mask=attention_mask).logits
            return logits

        lig = LayerIntegratedGradients(forward, model.get_input_embeddings())
        attributions, delta = lig.attribute(
            inputs=inputs,
            baselines=baseline,
            additional_forward_args=(mask,),
            target=target,
            n_steps=steps,
            internal_batch_size=min(IG_BATCH, steps),
            return_convergence_delta=True,
        )
        with torch.inference_mode():
            logits = forward(torch.cat([inputs, baseline]), torch.cat([mask, mask]))
        diff = float(logits[0, target] - logits[1, target])
        agrees = int(logits[0].argmax()) == served
        token_scores = attributions.sum(dim=-1)[0].detach().double().numpy()
        return token_scores, float(delta.item()), diff, agrees

    def attention_maps(self, ids: np.ndarray, served: int) -> tuple[np.ndarray, bool]:
        """Attention weights, (layers, heads, tokens, tokens), and whether the torch weights
        predict the served label."""
        import torch

        model = self.torch_model()
        inputs = torch.from_numpy(ids)
        with torch.inference_mode():
            out = model(
                input_ids=inputs, attention_mask=torch.ones_like(inputs), output_attentions=True
            )
        maps = np.stack([a[0].float().numpy() for a in out.attentions])
        return maps, int(out.logits[0].argmax()) == served

    # --- the torch weights --------------------------------------------------------------------

    def torch_model(self) -> Any:
        """The fp32 torch classifier with eager attention (loaded once)."""
        if self._model is None:
            if self.torch_folder is None:
                raise LmforgeError(
                    f"{self.ref} has no torch weights, and neither has a version it was "
                    "compressed from, so gradients and attention cannot be computed",
                    "use --method occlusion, which runs on the served backend",
                )
            from transformers import AutoModelForSequenceClassification

            from lmforge.models.classifier import quiet_transformers
            from lmforge.models.loading import from_pretrained, unavailable_on_failure

            with (
                unavailable_on_failure(
                    f"the torch weights in {self.torch_folder}",
                    "the version folder is damaged; use --method occlusion or another version",
                    errors=(Exception,),
                ),
                quiet_transformers(),
            ):
                model = from_pretrained(
                    AutoModelForSequenceClassification,
                    str(self.torch_folder),
                    attn_implementation="eager",  # attention weights are returned only by eager
                )
            model.eval()
            for p in model.parameters():  # gradients flow to the embeddings' output only
                p.requires_grad_(False)
            self._model = model
        return self._model

    def _untruncated(self) -> Tokenizer:
        """The tokenizer without truncation (built on first need): a text's full length."""
        if self._full_tok is None:
            self._full_tok = Tokenizer.from_str(self._tok.to_str())
            self._full_tok.no_truncation()
        return self._full_tok

    @property
    def baseline_token(self) -> str:
        return self._baseline()[0]

    @property
    def baseline_id(self) -> int:
        return self._baseline()[1]

    def _baseline(self) -> tuple[str, int]:
        """The baseline token and its id: [MASK] when asked for and the tokenizer has one, else
        the padding token."""
        if self.baseline == "mask":
            for token in ("[MASK]", "<mask>"):
                token_id = self._tok.token_to_id(token)
                if token_id is not None:
                    return token, int(token_id)
        pad_id = self.predictor.tokenizer.pad_id
        return self._tok.id_to_token(pad_id) or "[PAD]", pad_id


def attention_rollout(maps: np.ndarray) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema, 2020): heads averaged, the residual added as the
    identity, rows renormalised, and the layers multiplied from the first; row ``i`` is how
    much token ``i``'s final state draws on each input token."""
    tokens = maps.shape[-1]
    rollout = np.eye(tokens)
    for layer in maps:
        a = layer.mean(axis=0) + np.eye(tokens)
        a = a / a.sum(axis=-1, keepdims=True)
        rollout = a @ rollout
    return rollout


def last_layer_attention(maps: np.ndarray) -> np.ndarray:
    """The first token's ([CLS]) attention to every token in the last layer, heads averaged:
    what the classifier head reads from."""
    return np.asarray(maps[-1].mean(axis=0)[0], dtype=np.float64)


def _scored(words: list[Word], scores: np.ndarray) -> list[WordScore]:
    if not all(math.isfinite(s) for s in scores):  # never shown as a score: a broken model
        raise ModelUnavailableError(
            "the model computed a non-finite attribution (NaN or infinity)",
            "the version is likely damaged; use or promote another one",
        )
    return [WordScore(w.text, w.start, w.end, float(s)) for w, s in zip(words, scores, strict=True)]
