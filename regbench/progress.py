"""Where a command says what it is doing: lines on stderr, and while runs train, a progress bar.

The bar is tqdm's (`tqdm.auto`: a widget in a notebook with ipywidgets, text elsewhere), shown in a terminal and in
a notebook. Where nothing would redraw a bar (a log file, a pipe), each epoch is a line of its own instead.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


class Echo:
    """Say a line (`write`, or nothing when None) and open progress bars where they can be seen."""

    def __init__(self, write: Callable[[str], None] | None, bars: bool | None = None):
        self.write = write
        self.bars = write is not None and (_seen_live() if bars is None else bars)
        self._open = None  # the bar now shown, which lines are written above

    def __call__(self, line: str) -> None:
        if self.write is None:
            return
        if self._open is not None:
            self._open.write(line, file=sys.stderr)
        else:
            self.write(line)

    def bar(self, total: int, description: str):
        """Return a progress bar of `total` epochs (None where lines are written instead); close it when done."""
        if not self.bars:
            return None
        from tqdm.auto import tqdm

        self._open = tqdm(total=total, desc=description, unit="epoch", file=sys.stderr, dynamic_ncols=True)
        return self._open

    def close(self) -> None:
        """Close the bar now shown, if any."""
        if self._open is not None:
            self._open.close()
            self._open = None


def _seen_live() -> bool:
    """Return whether a bar would be seen as it moves: in a notebook's kernel, or on a terminal."""
    return "ipykernel" in sys.modules or sys.stderr.isatty()
