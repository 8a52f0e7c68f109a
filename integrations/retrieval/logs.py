"""What a run writes as it goes (rank 0): JSONL logs and TensorBoard scalars.

- ``log/train_log.jsonl``: one record per optimizer step (``step``, ``loss``,
  ``rank_loss``, ``iais_loss``, ``lambda``, ...);
- ``log/valid_log.jsonl``: one record per evaluation, ``{"step", "split",
  "final", <metrics>}``: every ``valid_steps`` on the val split (``final``
  false), and the final val/test evaluations (``final`` true).

:func:`read_run_log` reads both back, e.g. to draw the training curves
(:func:`.plotting.draw_training_curves`) without TensorBoard.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from typing import NamedTuple

__all__ = ["RunLog", "RunRecords", "read_run_log", "LOG_FILES"]

#: the JSONL files of ``<output_dir>/log``
LOG_FILES = ("train_log.jsonl", "valid_log.jsonl")

logger = logging.getLogger("integrations.retrieval")


class RunRecords(NamedTuple):
    """The JSONL logs of one run: step records and evaluation records, each in file order."""

    steps: list
    evaluations: list


def _read_jsonl(path: str) -> list[dict]:
    """The records of a JSONL file (none when it does not exist); unreadable lines are skipped."""
    records = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    records.append(json.loads(line))
                except ValueError:  # a line cut short by a crash
                    continue
    return records


def read_run_log(output_dir: str) -> RunRecords:
    """The step and evaluation records of the run in ``output_dir`` (see the module docstring)."""
    log_dir = os.path.join(output_dir, "log")
    return RunRecords(*(_read_jsonl(os.path.join(log_dir, name)) for name in LOG_FILES))


class RunLog:
    """``<output_dir>/log/train_log.jsonl`` and ``valid_log.jsonl`` (see the module docstring) and TensorBoard
    events.

    Disabled (every method a no-op) on ranks other than 0.
    """

    def __init__(self, output_dir: str, *, enabled: bool, tensorboard: bool) -> None:
        self.enabled = enabled
        self.path, self.valid_path = (os.path.join(output_dir, "log", name) for name in LOG_FILES)
        self.writer = None
        self._handles: dict[str, object] = {}
        if enabled and tensorboard:
            self.writer = _summary_writer(os.path.join(output_dir, "log"))

    def truncate_after(self, step: int) -> None:
        """Drop the records of steps > ``step`` from both logs (left by a run that stopped after its last
        checkpoint); a final evaluation at ``step`` goes too (the resumed run makes its own)."""
        if not self.enabled:
            return
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        for path in (self.path, self.valid_path):
            kept = [r for r in _read_jsonl(path) if isinstance(r.get("step"), int)
                    and (r["step"] < step or (r["step"] == step and not r.get("final")))]
            tmp = path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.writelines(json.dumps(r) + "\n" for r in kept)
            os.replace(tmp, path)

    def _append(self, path: str, record: dict) -> None:
        if path not in self._handles:
            self._handles[path] = open(path, "a", encoding="utf-8")
        self._handles[path].write(json.dumps(record) + "\n")
        self._handles[path].flush()

    def record(self, record: dict) -> None:
        """Append one step's record to the JSONL log and its numbers to TensorBoard (``train/``)."""
        if not self.enabled:
            return
        self._append(self.path, record)
        self.scalars("train/", {k: v for k, v in record.items() if k != "step"}, record["step"])

    def evaluation(self, step: int, split: str, metrics: dict, *, final: bool) -> None:
        """Append one evaluation's metrics to ``valid_log.jsonl`` and to TensorBoard (``valid/`` during
        training, ``eval/<split>_`` for the final ones)."""
        if not self.enabled:
            return
        self._append(self.valid_path, {"step": step, "split": split, "final": final, **metrics})
        self.scalars(f"eval/{split}_" if final else "valid/", metrics, step)

    def scalars(self, prefix: str, values: dict, step: int) -> None:
        """Finite numbers of ``values`` to TensorBoard as ``prefix + key``."""
        if self.writer is None:
            return
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.writer.add_scalar(f"{prefix}{key}", value, step)

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles = {}
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _summary_writer(log_dir: str):
    try:
        if "tensorflow" not in sys.modules:
            # TensorBoard imports TensorFlow when installed (seconds, and noisy) unless its own
            # "no TensorFlow" marker module exists; the event writer works without it.
            import types

            sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(log_dir)
    except Exception as err:  # tensorboard not installed
        logger.warning("TensorBoard disabled (%s: %s)", type(err).__name__, err)
        return None
