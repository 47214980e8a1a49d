"""`serve()`: a Triton server answering Metric3D requests (any backend) with dynamic batching, on HTTP and
gRPC: PyTriton's bundled tritonserver running one Python-backend model, `triton_models.Metric3DModel`.

Why not PyTriton's `Triton.bind`: its inference callable answers a whole batch or fails it (an
exception becomes the same error for every request in it), and it offers no ragged batching, so
images of different sizes could never share a batch. Triton's own Python backend answers each request
of a batch on its own and batches any image sizes together.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from ..checkpoint import read_state_dict
from ..errors import InputError
from ..runtime.metric3d import resolve_device
from ..settings import RuntimeSettings
from .interface import MODEL_NAME, request_inputs, response_outputs
from .model_config import DEFAULT_QUEUE_DELAY_US, Enum, string_parameters, write_model
from .tritonserver_process import Ports, TritonServer

DEFAULT_MAX_BATCH_SIZE = 4


def serve_config(options: dict[str, str], max_batch_size: int, max_queue_delay_us: int) -> dict:
    """The config of `serve`'s model; `options` are its RuntimeSettings as strings (`to_strings`)."""
    config = {
        "name": MODEL_NAME,
        "backend": "python",
        "max_batch_size": max_batch_size,
        "input": request_inputs(ragged=True),
        "output": response_outputs(),
        # One instance: it holds the one Metric3D, on the device its options name (KIND_CPU only tells
        # Triton not to start one per GPU).
        "instance_group": [{"kind": Enum("KIND_CPU"), "count": 1}],
        "parameters": string_parameters(options),
    }
    if max_batch_size > 1:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": max_queue_delay_us}
    return config


@contextlib.contextmanager
def serve(
    backbone: str = "vit-small",
    backend: str = "auto",
    precision: str | None = None,
    device: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    *,
    settings: RuntimeSettings | None = None,
    ports: Ports | None = None,
    address: str = "0.0.0.0",
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
    log_path: str | os.PathLike | None = None,
    ready_timeout_s: float | None = 600.0,
    verbose: bool = False,
) -> Iterator[TritonServer]:
    """A running Triton server whose model `metric3d` answers with `Metric3D(backbone, backend, precision,
    device, checkpoint).predict`: one predict per batch of up to `max_batch_size` images (of any sizes),
    formed from the requests that arrive within `max_queue_delay_us`; stopped on leaving the block.

    >>> with serve("vit-small", "torch", device="cpu", ports=free_ports(), address="127.0.0.1") as server:
    ...     depth = Metric3DClient(server.url("http")).predict(image, fx=500.0).depth

    settings: the Metric3D to serve, instead of backbone ... checkpoint (the command line's).
    The request format is in `interface`; see TritonServer for ports, address, log_path,
    ready_timeout_s and verbose.
    A checkpoint that cannot be read is refused before the server starts (CheckpointError); a model that
    fails to load in the server (a backend not installed, a checkpoint of another backbone) stops the
    start with BackendUnavailable quoting the model's error from the server's log.
    """
    settings = settings or RuntimeSettings(backbone, backend, precision, device, checkpoint)
    checkpoint = settings.checkpoint
    if max_batch_size < 1:
        raise InputError(f"max_batch_size {max_batch_size}: it must be >= 1 (1: no batching)")
    if max_queue_delay_us < 0:
        raise InputError(f"max_queue_delay_us {max_queue_delay_us}: it must be >= 0")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise InputError(f"checkpoint {checkpoint} is not a file: pass the official .pth file")
    if checkpoint is not None:  # a damaged file is said here, not in the log of a server that died of it
        read_state_dict(checkpoint, mmap=True)
    served = dataclasses.replace(
        settings,
        # checked here, before a server starts; the model loads in another process
        device=str(resolve_device(settings.device)) if settings.device is not None else None,
        checkpoint=str(Path(checkpoint).resolve()) if checkpoint is not None else None,
    )
    options = served.to_strings()  # the model's config parameters (Metric3DModel reads them back)
    with tempfile.TemporaryDirectory(prefix="trt-metric3d-serve-") as repository:
        config = serve_config(options, max_batch_size, max_queue_delay_us)
        write_model(Path(repository), config, python_model=f"{__package__}.triton_models.Metric3DModel")
        with TritonServer(repository, ports, address, log_path, ready_timeout_s, verbose=verbose) as server:
            yield server


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """Inside the block SIGTERM interrupts like Ctrl-C (KeyboardInterrupt), so that both leave serve()'s
    block and stop the server the same way, also while it starts. Main thread only."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def wait_for_stop(server: TritonServer) -> bool:
    """Block until Ctrl-C (or SIGTERM under `stop_signals`): True, or until the server ends by itself:
    False. Leaving serve()'s block then stops the server."""
    try:
        while server.running():
            time.sleep(0.5)
    except KeyboardInterrupt:
        return True
    return False
