"""Progress output that suits where it goes: the one home of every progress bar of the engine.

:class:`Progress` looks at the stream it writes to (stderr by default):

- **a terminal**: a tqdm bar, redrawn in place;
- **a file or a pipe** (``make demo > log.txt 2>&1``, a batch job's log): plain
  one-line records, one when :data:`INTERVAL` seconds (10) have passed since
  the previous one and a last one when the work ends, with no carriage return
  and no escape code, e.g.::

      no IAIS: 120/600 steps (20%) in 24 s, 5.0 steps/s, about 96 s left; loss=0.1 rank=0.1 lam=0

- **disabled** (``--quiet``, ``--no-progress``, ranks other than 0): nothing.

A progress display opened while another one is open (the scoring of a
validation inside training) is *nested*: on a terminal its bar goes away when
done, and in a file it writes its last record only when it has written one
before (work longer than the interval), so that short inner work adds no
lines.

:meth:`Progress.write` prints a message that belongs with the progress (a
validation result) on stdout, above the bar on a terminal.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Mapping, TextIO

__all__ = ["INTERVAL", "Progress", "is_terminal"]

#: seconds between two progress records when the output is not a terminal
INTERVAL = 10.0


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is an open interactive terminal."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


class Progress:
    """A progress display of ``total`` units of work (``None``: unknown), as the module docstring describes.

    Args:
        total: units of work in all; initial: units already done (a resumed run).
        desc: what is being done, the prefix of every record; unit: the singular name of one unit.
        enabled: False shows nothing (``write`` still prints).
        stream: where progress goes (default ``sys.stderr``).
        interval: seconds between two records when ``stream`` is not a terminal.
        clock: the time source (seconds).

    >>> import io
    >>> out = io.StringIO()
    >>> with Progress(3, desc="train", unit="step", stream=out, clock=iter([0, 4, 8]).__next__) as bar:
    ...     bar.set_postfix({"loss": "0.5"})
    ...     bar.update(3)
    >>> out.getvalue()
    'train: 3/3 steps (100%) in 8 s, 0.375 steps/s; loss=0.5\\n'
    """

    _open = 0  # progress displays open now (enabled ones)

    def __init__(self, total: int | None = None, *, desc: str, unit: str, initial: int = 0, enabled: bool = True,
                 stream: TextIO | None = None, interval: float = INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.desc, self.unit, self.enabled = total, desc, unit, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.interval, self.clock = interval, clock
        self.n = self.initial = initial
        self.postfix: dict[str, Any] = {}
        self.bar = None
        self.nested = enabled and Progress._open > 0
        Progress._open += int(enabled)
        if enabled and is_terminal(self.stream):
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=self.stream,
                            dynamic_ncols=True, smoothing=0.1, leave=not self.nested)
        self.started = self.last = clock()
        self.printed_n: int | None = None  # the count of the last record

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def set_postfix(self, values: Mapping[str, Any]) -> None:
        """Numbers shown after the count (shown with the next update)."""
        self.postfix = dict(values)
        if self.bar is not None:
            self.bar.set_postfix(self.postfix, refresh=False)

    def update(self, n: int = 1) -> None:
        """``n`` more units done."""
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled:
            now = self.clock()
            if now - self.last >= self.interval:
                self._record(now)

    def write(self, message: str, file: TextIO | None = None) -> None:
        """Print ``message`` (stdout by default), above the bar on a terminal."""
        if self.bar is not None:
            self.bar.write(message, file=file if file is not None else sys.stdout)
        else:
            print(message, file=file if file is not None else sys.stdout, flush=True)

    def close(self) -> None:
        """End the display: close the bar, or write the last record (see the module docstring)."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.printed_n != self.n and not (self.nested and self.printed_n is None):
            self._record(self.clock())
        self.enabled = False
        Progress._open -= 1

    def _record(self, now: float) -> None:
        self.last = now
        print(self.format_record(now - self.started), file=self.stream, flush=True)
        self.printed_n = self.n

    def format_record(self, elapsed: float) -> str:
        """One plain line: count, share of the total, time, rate, time left, postfix."""
        units = self.unit if self.n == 1 and self.total in (None, 1) else self.unit + "s"
        done = self.n - self.initial
        rate = done / elapsed if elapsed > 0 else 0.0
        text = f"{self.desc}: {self.n}" + (f"/{self.total}" if self.total else "") + f" {units}"
        if self.total:
            text += f" ({100 * self.n / self.total:.0f}%)"
        text += f" in {elapsed:.0f} s, {_number(rate)} {self.unit}s/s"
        if self.total and rate > 0 and self.n < self.total:
            text += f", about {(self.total - self.n) / rate:.0f} s left"
        if self.postfix:
            text += "; " + " ".join(f"{k}={v}" for k, v in self.postfix.items())
        return text


def _number(x: float) -> str:
    """Three significant digits, without an exponent below a million."""
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}"
