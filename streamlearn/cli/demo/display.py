"""The demo's live view: one status line, rewritten in place on a terminal.

>>> snap = Snapshot(t_s=12.0, published=120_000, in_rate=10_000.0, learned=118_000,
...                 learned_rate=9_800.0, version=23, age_s=0.4,
...                 accuracy=0.71, log_loss=0.55, dlq=118, p50_ms=640.0, p99_ms=1210.0)
>>> print(format_line(snap))  # doctest: +NORMALIZE_WHITESPACE
12s  in 10,000/s (120,000)  learned 9,800/s (118,000)  v23 age 0.4s
acc 0.710  logloss 0.550  dlq 118  fresh p50 640ms p99 1210ms
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from typing import TextIO

__all__ = ["Snapshot", "LiveDisplay", "format_line"]


@dataclass(frozen=True)
class Snapshot:
    """What the demo shows once a second (and keeps in ``timeline.json``)."""

    t_s: float
    published: int
    in_rate: float
    learned: int
    learned_rate: float
    version: int | None
    age_s: float | None
    accuracy: float | None
    log_loss: float | None
    dlq: int
    p50_ms: float | None
    p99_ms: float | None

    def to_json(self) -> dict:
        return asdict(self)


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_line(s: Snapshot) -> str:
    """One line of figures."""
    version = "v-" if s.version is None else f"v{s.version}"
    return (
        f"{s.t_s:.0f}s  in {s.in_rate:,.0f}/s ({s.published:,})  "
        f"learned {s.learned_rate:,.0f}/s ({s.learned:,})  "
        f"{version} age {_num(s.age_s, '.1f')}s  "
        f"acc {_num(s.accuracy, '.3f')}  logloss {_num(s.log_loss, '.3f')}  dlq {s.dlq}  "
        f"fresh p50 {_num(s.p50_ms, '.0f')}ms p99 {_num(s.p99_ms, '.0f')}ms"
    )


class LiveDisplay:
    """Print snapshots: in place on a terminal, one line every ``every_s`` seconds otherwise.

    Parameters
    ----------
    out
        Where to write (default ``sys.stdout``).
    every_s
        On a non-terminal, the seconds between printed lines.
    """

    def __init__(self, out: TextIO | None = None, every_s: float = 5.0) -> None:
        self.out = out or sys.stdout
        self.tty = bool(getattr(self.out, "isatty", lambda: False)())
        self.every_s = every_s
        self._last_t: float | None = None
        self._open_line = False

    def message(self, text: str) -> None:
        """A lifecycle line (starting, stopping, where the report is)."""
        self._end_line()
        print(text, file=self.out, flush=True)

    def show(self, snap: Snapshot) -> None:
        line = format_line(snap)
        if self.tty:
            self.out.write("\r\x1b[2K" + line)
            self.out.flush()
            self._open_line = True
        elif self._last_t is None or snap.t_s - self._last_t >= self.every_s:
            print(line, file=self.out, flush=True)
            self._last_t = snap.t_s

    def _end_line(self) -> None:
        if self._open_line:
            self.out.write("\n")
            self._open_line = False
