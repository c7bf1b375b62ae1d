"""The one progress display of the CLI: a live line rewritten in place on a terminal, else plain lines.

On a terminal `show` redraws at most every `redraw_s` (the last state is forced through); off a
terminal (a log file, a pipe) it prints a line at most every `line_every_s`, or when forced, so
logs get a readable trail instead of a thousand carriage returns.
"""

from __future__ import annotations

import time
from typing import TextIO

REDRAW_S = 0.1
LINE_EVERY_S = 2.0


class Progress:
    """A live progress line on a terminal, a line now and then otherwise."""

    def __init__(
        self, stream: TextIO, *, redraw_s: float = REDRAW_S, line_every_s: float = LINE_EVERY_S
    ) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.redraw_s = redraw_s
        self.line_every_s = line_every_s
        self._width = 0
        self._last_draw = -max(redraw_s, line_every_s)

    def show(self, text: str, *, force: bool = False) -> None:
        """Show the current state (dropped when the last one was shown too recently, unless forced)."""
        now = time.monotonic()
        if not force and now - self._last_draw < (self.redraw_s if self.tty else self.line_every_s):
            return
        self._last_draw = now
        if self.tty:
            self.stream.write("\r" + text.ljust(self._width))
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def say(self, text: str) -> None:
        """Print a message line (below the live line on a terminal)."""
        self.end()
        self.stream.write(text + "\n")
        self.stream.flush()

    def end(self) -> None:
        """Leave the live line as it is and move below it."""
        if self.tty and self._width:
            self.stream.write("\n")
            self._width = 0
        self.stream.flush()
