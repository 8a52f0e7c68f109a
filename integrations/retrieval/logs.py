"""What a run writes as it goes (rank 0): a JSONL step log and TensorBoard scalars."""

from __future__ import annotations

import json
import logging
import math
import os
import sys

__all__ = ["RunLog"]

logger = logging.getLogger("integrations.retrieval")


class RunLog:
    """``<output_dir>/log/train_log.jsonl`` (one record per step) and TensorBoard events.

    Disabled (every method a no-op) on ranks other than 0.
    """

    def __init__(self, output_dir: str, *, enabled: bool, tensorboard: bool) -> None:
        self.enabled = enabled
        self.path = os.path.join(output_dir, "log", "train_log.jsonl")
        self.writer = None
        self._handle = None
        if enabled and tensorboard:
            self.writer = _summary_writer(os.path.join(output_dir, "log"))

    def truncate_after(self, step: int) -> None:
        """Drop records of steps > ``step`` (left by a run that stopped after its last checkpoint)."""
        if not self.enabled:
            return
        kept = []
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as handle:
                for line in handle:
                    try:
                        if json.loads(line)["step"] <= step:
                            kept.append(line if line.endswith("\n") else line + "\n")
                    except (ValueError, KeyError):
                        continue
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.writelines(kept)
        os.replace(tmp, self.path)

    def record(self, record: dict) -> None:
        """Append one step's record to the JSONL log and its numbers to TensorBoard (``train/``)."""
        if not self.enabled:
            return
        if self._handle is None:
            self._handle = open(self.path, "a", encoding="utf-8")
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()
        self.scalars("train/", {k: v for k, v in record.items() if k != "step"}, record["step"])

    def scalars(self, prefix: str, values: dict, step: int) -> None:
        """Finite numbers of ``values`` to TensorBoard as ``prefix + key``."""
        if self.writer is None:
            return
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.writer.add_scalar(f"{prefix}{key}", value, step)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
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
