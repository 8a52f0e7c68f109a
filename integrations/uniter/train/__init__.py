"""Hard-negative retrieval fine-tuning, in the order a training step uses the pieces.

- :mod:`.sampling`: which captions and images a step uses (per-rank shard of
  the positives, random negatives, a resumable random stream) and a cache of
  decoded captions and regions;
- :mod:`.mining`: batches in UNITER's compact layout, hard-negative mining
  (eval mode, no grad, in chunks) and the training group;
- :mod:`.optim`: AdamW parameter groups and the warm-up/linear-decay schedule;
- :mod:`.checkpoint`: atomic, resumable training checkpoints;
- :mod:`.loop`: the training loop (ranking loss, IAIS, AMP, DDP, signals,
  logging, validation).

``python -m integrations.uniter.finetune`` is the command line; see
``docs/finetune.md``.
"""

from .checkpoint import (CheckpointError, find_checkpoints, latest_checkpoint, load_training_checkpoint,
                         save_atomic)
from .loop import NonFiniteLossError, TrainOptions, TrainResult, train
from .mining import Group, build_batch, make_group, mine_hard_negatives
from .optim import WarmupLinear, build_optimizer, build_scheduler
from .sampling import DataStore, HardNegativeSampler

__all__ = [
    "DataStore", "HardNegativeSampler", "Group", "build_batch", "make_group", "mine_hard_negatives",
    "WarmupLinear", "build_optimizer", "build_scheduler", "CheckpointError", "save_atomic",
    "find_checkpoints", "latest_checkpoint", "load_training_checkpoint", "TrainOptions", "TrainResult",
    "NonFiniteLossError", "train",
]
