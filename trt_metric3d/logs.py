"""The package's log lines (logger "trt_metric3d") on stderr, for the command line and its workers."""

from __future__ import annotations

import logging
import sys

LOGGER = "trt_metric3d"


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
