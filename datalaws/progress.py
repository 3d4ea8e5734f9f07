"""Progress that fits the terminal: one updating line on a TTY, sparse lines in a log.

On a terminal, each update rewrites one line (``\\r`` + clear to end of line), cut to the
terminal's width so it never wraps into a scrolling wall. When the output is a file or a
pipe (``make demo > log``, a SLURM log, CI), carriage returns would pile up into one huge
line, so updates are printed as whole lines only every 10% of the work or every 30 s,
whichever comes first (the 30 s only when the count moved), plus the final one.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """``with Progress(total, "sweep") as p: p.update(done, "3 running")``."""

    def __init__(self, total: int, label: str, *, stream: TextIO | None = None,
                 enabled: bool = True, every_frac: float = 0.1, every_s: float = 30.0,
                 tty: bool | None = None):
        self.total, self.label, self.enabled = max(int(total), 0), label, enabled
        self.stream = stream if stream is not None else sys.stdout
        self.tty = bool(tty if tty is not None else getattr(self.stream, "isatty", bool)())
        self.every_frac, self.every_s = every_frac, every_s
        self._next_frac = every_frac
        self._last_print = time.monotonic()
        self._open_line = False  # a TTY line without its newline yet
        self._final_shown = False
        self._printed_done = -1

    def _text(self, done: int, msg: str) -> str:
        frac = f" ({100 * done / self.total:.0f}%)" if self.total else ""
        return f"{self.label}: {done}/{self.total}{frac}" + (f" {msg}" if msg else "")

    def update(self, done: int, msg: str = "") -> None:
        """Report ``done`` of ``total``; shown now on a TTY, sparsely in a log."""
        if not self.enabled:
            return
        text = self._text(done, msg)
        if self.tty:
            width = shutil.get_terminal_size((100, 20)).columns - 1
            self.stream.write("\r" + text[:width] + "\x1b[K")
            self.stream.flush()
            self._open_line = True
            return
        now = time.monotonic()
        frac = done / self.total + 1e-9 if self.total else 1.0  # 0.1 * 3 > 0.3
        final = bool(self.total) and done >= self.total
        if final and self._final_shown:
            return
        moved = done != self._printed_done  # on time only with news: no identical lines
        if frac >= self._next_frac or (moved and now - self._last_print >= self.every_s) or final:
            self._final_shown, self._printed_done = final, done
            while self._next_frac <= frac:
                self._next_frac += self.every_frac
            self._last_print = now
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self, msg: str | None = None) -> None:
        """End the line on a TTY; print ``msg`` (if any) as a last line."""
        if not self.enabled:
            return
        if self._open_line:
            self.stream.write("\n")
            self._open_line = False
        if msg:
            self.stream.write(msg + "\n")
        self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
