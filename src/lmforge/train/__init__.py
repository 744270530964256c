"""Training: one loop (Accelerate, early stopping, checkpoints and resume) and each task's loss
and collator on it — classification, contrastive embeddings, instruction tuning."""

from lmforge.train.loop import TrainOutcome, fine_tune

__all__ = ["TrainOutcome", "fine_tune"]
