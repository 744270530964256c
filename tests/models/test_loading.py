"""Loading models from several threads at once leaves torch's initialisers in place (transformers
swaps them for no-ops process-wide while it loads; see lmforge.models.loading)."""

from __future__ import annotations

import threading
from pathlib import Path

import torch
from transformers import AutoModel, BertConfig, BertModel, PreTrainedModel

from lmforge.models.loading import MODEL_BUILD_LOCK, from_pretrained


def test_concurrent_loads_leave_the_initialisers_working(tiny_base: Path) -> None:
    originals = (torch.nn.init.normal_, torch.nn.init.kaiming_uniform_)
    init_weights = PreTrainedModel.init_weights
    errors: list[BaseException] = []

    def load_many() -> None:
        try:
            for _ in range(5):
                model = from_pretrained(AutoModel, tiny_base, use_safetensors=True)
                assert torch.isfinite(model.embeddings.word_embeddings.weight).all()
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=load_many) for _ in range(4)]
    for t in threads:
        t.start()
    with MODEL_BUILD_LOCK:  # a model built meanwhile, as a test fixture or a LoRA adapter is
        torch.manual_seed(0)
        built = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2))
    for t in threads:
        t.join()
    assert not errors, errors
    assert (torch.nn.init.normal_, torch.nn.init.kaiming_uniform_) == originals
    assert PreTrainedModel.init_weights is init_weights
    weights = built.encoder.layer[0].attention.self.query.weight.detach()
    assert torch.isfinite(weights).all() and 0.01 < float(weights.std()) < 0.03  # N(0, 0.02)
