"""What the Triton tests share: starting a server or skipping where PyTriton's tritonserver cannot run,
and finding the processes a server left."""

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from trt_metric3d.errors import BackendUnavailable


@contextlib.contextmanager
def started(server: contextlib.AbstractContextManager) -> Iterator:
    """Enter `server` (a TritonServer or serve()); a server that cannot start skips the test (fails in CI,
    where it must run)."""
    pytest.importorskip("pytriton", reason="the serve extra is not installed")
    pytest.importorskip("tritonclient.http", reason="the serve extra is not installed")
    with contextlib.ExitStack() as stack:
        try:
            running = stack.enter_context(server)
        except BackendUnavailable as e:
            if os.environ.get("CI"):
                raise
            pytest.skip(f"PyTriton's tritonserver cannot start on this machine: {e}")
        yield running


def descendants(pid: int) -> set[int]:
    """The live processes started by `pid`, their children and so on (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "(command name)"
            if fields[0] != "Z":  # a zombie has ended
                children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pids: set[int]) -> set[int]:
    """Those of `pids` still running (not ended, not zombies waiting for their parent)."""
    running = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                running.add(pid)
    return running
