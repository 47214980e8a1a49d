"""The package's log lines (logger "trt_metric3d") on stderr, for the command line and its workers,
and how they say things (percentages).

Levels: INFO, one line per phase (the default of the command line); VERBOSE, also the tools' own
output (Triton's log, Ray's warnings, Model Optimizer's progress); DEBUG, everything.
"""

from __future__ import annotations

import logging
import sys

LOGGER = "trt_metric3d"
VERBOSE = 15  # between DEBUG and INFO
logging.addLevelName(VERBOSE, "VERBOSE")


class _CurrentStderr(logging.StreamHandler):
    """Writes to sys.stderr as it is at each record (a test runner or a host may swap it)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("trt-metric3d: %(message)s"))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def show_logs(level: int = logging.INFO) -> None:
    """Print the package's log records of `level` and above on stderr (one handler per process)."""
    logger = logging.getLogger(LOGGER)
    logger.setLevel(level)
    if not any(isinstance(h, _CurrentStderr) for h in logger.handlers):
        logger.addHandler(_CurrentStderr())


def shows_tool_output() -> bool:
    """Whether the tools the package drives may print their own output (logger at VERBOSE or below)."""
    return logging.getLogger(LOGGER).isEnabledFor(VERBOSE)


def percent(fraction: float) -> str:
    """A fraction as a percentage a reader takes at a glance: "100 %", "81.2 %", "0.4 %"; never 0 or 100
    when it is not ("< 0.1 %", "> 99.9 %")."""
    if fraction <= 0:
        return "0 %"
    if fraction >= 1:
        return "100 %"
    share = 100 * fraction
    if share < 0.1:
        return "< 0.1 %"
    if share > 99.9:
        return "> 99.9 %"
    return f"{share:.1f} %".replace(".0 %", " %")
