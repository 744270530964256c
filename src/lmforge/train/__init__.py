"""Training: fine-tuning loops (full and LoRA) with checkpoints and early stopping."""

from lmforge.train.loop import TrainOutcome, fine_tune

__all__ = ["TrainOutcome", "fine_tune"]
