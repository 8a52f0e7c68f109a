"""The model-agnostic retrieval engine: hard-negative fine-tuning with IAIS and full-ranking evaluation.

A model plug-in (:class:`RetrievalPlugin`, see :mod:`.protocol`) provides its
data (:class:`Pairs`), a collate function and a model returning
:class:`RetrievalOutput`; the engine does everything else:

- :mod:`.sampling`: per-rank positives, random negatives, a resumable stream;
- :mod:`.mining`: hard-negative mining and training groups;
- :mod:`.objective`: the margin ranking loss, the IAIS term and its anchor
  policy, the batch arithmetic;
- :mod:`.loop`: :func:`train`, the recipe, and :func:`dry_run`, its checks
  without training; :mod:`.options`: its options
  (:class:`TrainOptions`) read from config files and flags;
- :mod:`.runtime` (processes, precision, seeds, signals), :mod:`.checkpoint`
  (atomic, resumable), :mod:`.distributed` (``torchrun`` helpers),
  :mod:`.logs` (JSONL and TensorBoard), :mod:`.optim` (AdamW groups, warm-up),
  :mod:`.progress` (progress output that suits where it goes);
- :mod:`.evaluation`: full-ranking scores and recalls; :mod:`.isda`: mean
  ISDa over annotated pairs; :mod:`.plotting`: object-level attention pictures
  and training curves;
- :mod:`.cli`: what every command shares (one-line user errors).
"""

from .evaluation import compute_recalls, evaluate_retrieval, format_metrics_table, score_matrix
from .loop import NonFiniteLossError, TrainResult, dry_run, format_plan, train
from .objective import SetupError
from .options import TrainOptions, load_config, options_parser, parse_options
from .protocol import Pairs, RetrievalOutput, RetrievalPlugin

__all__ = [
    "RetrievalPlugin", "Pairs", "RetrievalOutput", "TrainOptions", "TrainResult", "train", "dry_run", "format_plan",
    "NonFiniteLossError",
    "SetupError", "evaluate_retrieval", "score_matrix", "compute_recalls", "format_metrics_table", "load_config",
    "options_parser", "parse_options",
]
