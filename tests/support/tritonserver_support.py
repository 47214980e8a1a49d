"""What the Triton tests share: the request images and predict's answers, starting a server or skipping
where PyTriton's tritonserver cannot run, concurrent requests, and finding the processes a server left."""

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from trt_metric3d import Metric3D, Prediction
from trt_metric3d.errors import BackendUnavailable
from trt_metric3d.serving import Metric3DClient

IMAGES = [
    np.random.default_rng(seed).integers(0, 256, shape, np.uint8)
    for seed, shape in ((0, (48, 64, 3)), (1, (64, 48, 3)))
]
FX, FY = 60.0, 50.0


def predict_each(checkpoint: Path) -> list[Prediction]:
    """predict's answer for each of IMAGES, each image in its own forward."""
    with Metric3D("vit-small", "torch", "fp32", "cpu", str(checkpoint)) as runtime:
        return [runtime.predict(image, fx=FX, fy=FY) for image in IMAGES]


def send_together(
    server, requests: list[tuple[int, str]], bad_request: Callable[[], Exception]
) -> tuple[dict[int, Prediction], list[Exception]]:
    """`requests` ((index into IMAGES, "http" | "grpc")) and `bad_request` (returns the error it got),
    each from its own thread at once: the answers by request index, and the refusals."""
    answers, refusals = {}, []

    def ask(index: int, image: int, protocol: str) -> None:
        with Metric3DClient(server.url(protocol), protocol) as client:
            answers[index] = client.predict(IMAGES[image], fx=FX, fy=FY)

    threads = [threading.Thread(target=ask, args=(i, *r)) for i, r in enumerate(requests)]
    threads.append(threading.Thread(target=lambda: refusals.append(bad_request())))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers, refusals


def assert_like_predict(answers: dict[int, Prediction], requests: list, expected: list[Prediction]) -> None:
    """Every request answered, as predict answered its image alone. Tolerance: the server ran them in
    one forward (measured: 1.4e-6 relative on depth, 3e-6 absolute on normals)."""
    assert len(answers) == len(requests)
    for index, (image, _) in enumerate(requests):
        for field in ("depth", "confidence", "normal"):
            got, want = getattr(answers[index], field), getattr(expected[image], field)
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=5e-6, atol=5e-6)


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
