"""The `tritonserver` bundled in PyTriton's wheel (CPU-capable, Python backend only), run on a model
repository as a context manager: started, waited for until its models are ready, stopped cleanly.

Its Python-backend models run in stub processes that embed this interpreter's Python version and see
this environment's packages (trt_metric3d included).
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import importlib.util
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..errors import BackendUnavailable, InputError, MissingDependency

SERVE_EXTRA = 'pip install "trt-metric3d[serve]"'
PR_SET_PDEATHSIG = 1  # <sys/prctl.h>
# Python backend shared memory per model instance: PyTriton's sizes (start small, grow by 1 MiB)
PYTHON_BACKEND_CONFIG = {"shm-default-byte-size": 4 * 2**20, "shm-growth-byte-size": 2**20}


@dataclass(frozen=True)
class Ports:
    """The server's three endpoints' ports: each its own (tritonserver answers a clash with its whole
    usage text), checked when made."""

    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002

    def __post_init__(self) -> None:
        taken: dict[int, str] = {}
        for protocol, port in self.endpoints():
            option = f"--{protocol.lower()}-port"
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                raise InputError(f"{option} {port!r} is not a port: choose one from 1 to 65535")
            if port in taken:
                raise InputError(
                    f"{taken[port]} and {option} are both {port}: give each endpoint its own port"
                )
            taken[port] = option

    def endpoints(self) -> list[tuple[str, int]]:
        return [("HTTP", self.http), ("gRPC", self.grpc), ("metrics", self.metrics)]


def free_ports(address: str = "127.0.0.1") -> Ports:
    """Three ports that are free on `address` now (the OS picks them; tests and benchmarks)."""
    sockets = [socket.socket() for _ in range(3)]
    try:
        for s in sockets:
            s.bind((address, 0))
        return Ports(*(s.getsockname()[1] for s in sockets))
    finally:
        for s in sockets:
            s.close()


def _check_free(address: str, ports: Ports) -> None:
    for protocol, port in ports.endpoints():
        with socket.socket() as s:
            # as the server binds: connections of a server that just stopped (TIME_WAIT) do not count
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((address, port))
            except OSError as e:
                raise InputError(
                    f"the {protocol} port {port} on {address} cannot be used ({e.strerror}): another server "
                    f"holds it; choose a free port (--{protocol.lower()}-port)"
                ) from e


# tritonserver's line when a model's initialize failed: "failed to load 'metric3d' version 1: Internal:
# CheckpointError: ...\n\nAt:\n  <the stub's stack>": Triton's status, then the model's own error up to
# the first newline (written as backslash-n)
_MODEL_FAILED = re.compile(
    r"failed to load '([^']+)' version \d+: (?:[A-Z][a-z]+(?: [a-z]+)*: )?(.*?)(?:\\n|\"?$)"
)


def exit_reason(status: int, log_lines: list[str]) -> str:
    """Why tritonserver ended, in one line: its signal or exit status, and the model's own error or the
    server's last error from its log (a signal leaves no line there)."""
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        how = f"killed by {name}"
        if -status == signal.SIGKILL:
            how += " (sent by another process, or the kernel's out-of-memory killer)"
    else:
        how = f"exit status {status}"
    for line in reversed(log_lines):
        failed = _MODEL_FAILED.search(line)
        if failed:
            reason = failed[2].replace('\\"', '"').strip()  # glog writes quotes in its quoted lines as \"
            return f"{how}; model '{failed[1]}' could not load: {reason}"
    errors = [line[len("error: ") :] for line in log_lines if line.startswith("error: ")]
    if errors:
        return f"{how}: {errors[-1].strip()}"
    return f"{how}; its log names no reason"


def pytriton_dir() -> Path:
    """PyTriton's installed package folder (not imported: its import pulls in its whole runtime)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        raise MissingDependency(
            f"the Triton server comes with PyTriton, which is not installed: {SERVE_EXTRA}"
        )
    return Path(spec.origin).parent


def _backends_folder(pytriton: Path, folder: Path) -> Path:
    """A backends/ folder whose Python backend has the stub for this Python version (the wheel ships
    one per version beside the backend, as PyTriton itself assembles it)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = pytriton / "tritonserver" / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise BackendUnavailable(
            f"PyTriton's Triton server has no Python backend for Python {version}: use a Python it supports "
            f"(see {stub.parent.parent})"
        )
    python = folder / "python"
    shutil.copytree(pytriton / "tritonserver" / "backends" / "python", python)
    shutil.copy2(stub, python)
    return folder


def server_environment(pytriton: Path) -> dict[str, str]:
    """The environment tritonserver and its Python stubs need."""
    env = dict(os.environ)
    libraries = [str(pytriton.parent / "nvidia_pytriton.libs")]  # the stub's CUDA runtime and co.
    # The stub links libpython3.X.so and the loader takes the first it finds: with a pyenv / venv
    # Python that can be the system's libpython of another patch release, and the stub then fails at
    # start ("'_thread.RLock' object has no attribute '_recursion_count'"). This interpreter's own
    # library folder goes first, where it has the shared library.
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and (Path(libdir) / str(sysconfig.get_config_var("LDLIBRARY"))).is_file():
        libraries.insert(0, libdir)
    env["LD_LIBRARY_PATH"] = os.pathsep.join([*libraries, *filter(None, [env.get("LD_LIBRARY_PATH")])])
    # The stub's embedded interpreter finds its prefix (and this environment's site-packages, with
    # trt_metric3d) through the first `python3` on PATH.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _die_with_parent_hook():
    """What the child runs before exec: on Linux it asks for SIGTERM when the thread that started it
    dies, so a killed parent leaves no server behind (start it from a thread that lives as long as the
    server, e.g. the main thread). prctl is looked up here, before the fork."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class _LogTail:
    """tritonserver's output passed on to this process's stderr as it comes, its last lines kept for the
    reason it ended."""

    def __init__(self, stream: IO[bytes], keep: int = 200) -> None:
        self._lines: collections.deque[str] = collections.deque(maxlen=keep)
        self._thread = threading.Thread(target=self._pass_on, args=(stream,), daemon=True)
        self._thread.start()

    def _pass_on(self, stream: IO[bytes]) -> None:
        with stream:
            for raw in stream:
                line = raw.decode(errors="replace")
                self._lines.append(line.rstrip("\n"))
                sys.stderr.write(line)
                sys.stderr.flush()

    def finish(self, timeout_s: float = 5.0) -> None:
        """Wait for the last lines (the model's stub processes may hold the pipe a little longer)."""
        self._thread.join(timeout_s)

    def lines(self) -> list[str]:
        return list(self._lines)


class TritonServer:
    """PyTriton's tritonserver on `repository` (every model in it loaded at start).

    >>> with TritonServer("models/", free_ports(), "127.0.0.1") as server:
    ...     client = tritonclient.http.InferenceServerClient(server.url("http"))

    ports: the HTTP, gRPC and metrics ports (default 8000, 8001, 8002).
    address: where the endpoints listen ("0.0.0.0": every interface).
    log_path: the server's log (its stdout and stderr, some 50 lines at each start) goes there [default:
    a file in the server's temporary folder, removed when it stops]; a failed start quotes its errors.
    verbose: the log goes to this process's stdout and stderr instead.
    ready_timeout_s: how long its models may take to load (None: as long as the server runs).
    """

    def __init__(
        self,
        repository: str | os.PathLike,
        ports: Ports | None = None,
        address: str = "0.0.0.0",
        log_path: str | os.PathLike | None = None,
        ready_timeout_s: float | None = 600.0,
        exit_timeout_s: int = 30,
        verbose: bool = False,
    ) -> None:
        self.repository = Path(repository)
        self.ports = ports or Ports()
        self.address = address
        self.log_path = Path(log_path) if log_path is not None else None
        self.verbose = verbose
        self.log_file: Path | None = None  # where the running server's log goes (None: the terminal)
        self.ready_timeout_s = ready_timeout_s
        self.exit_timeout_s = exit_timeout_s
        self.process: subprocess.Popen | None = None
        self._log_tail: _LogTail | None = None
        self._workdir: tempfile.TemporaryDirectory | None = None

    def url(self, protocol: str = "http") -> str:
        """host:port of the "http", "grpc" or "metrics" endpoint, as tritonclient takes it."""
        host = "127.0.0.1" if self.address == "0.0.0.0" else self.address
        return f"{host}:{getattr(self.ports, protocol)}"

    def start(self) -> None:
        pytriton = pytriton_dir()
        _check_free(self.address, self.ports)
        self._workdir = tempfile.TemporaryDirectory(prefix="trt-metric3d-triton-")
        try:
            self._launch(pytriton, Path(self._workdir.name))
            self._wait_until_ready()
        except BaseException:  # also Ctrl-C while the models load: nothing is left running
            self.stop()
            raise

    def _launch(self, pytriton: Path, work: Path) -> None:
        backend_config = {
            # shared memory regions are named after this; two servers on one machine must not share them
            "shm-region-prefix-name": f"trt-metric3d-{os.getpid()}-{work.name}",
            **PYTHON_BACKEND_CONFIG,
        }
        command = [
            str(pytriton / "tritonserver" / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={_backends_folder(pytriton, work / 'backends')}",
            f"--http-address={self.address}",
            f"--grpc-address={self.address}",
            f"--metrics-address={self.address}",
            f"--http-port={self.ports.http}",
            f"--grpc-port={self.ports.grpc}",
            f"--metrics-port={self.ports.metrics}",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            *(f"--backend-config=python,{key}={value}" for key, value in backend_config.items()),
        ]
        self.log_file = None if self.verbose else self.log_path or work / "tritonserver.log"
        with open(self.log_file, "wb") if self.log_file is not None else contextlib.nullcontext() as log:
            self.process = subprocess.Popen(
                command,
                env=server_environment(pytriton),
                stdout=log if log is not None else subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches us only; stop() shuts the server down in order
                preexec_fn=_die_with_parent_hook(),
            )
        if log is None:
            self._log_tail = _LogTail(self.process.stdout)

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + (self.ready_timeout_s if self.ready_timeout_s is not None else math.inf)
        ready = f"http://{self.url('http')}/v2/health/ready"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BackendUnavailable(
                    f"tritonserver ended before its models were ready: {self.exit_reason()}"
                )
            try:
                with urllib.request.urlopen(ready, timeout=2):
                    return
            except (urllib.error.URLError, OSError):  # not listening yet, or models still loading (400)
                time.sleep(0.25)
        last_error = next((line for line in reversed(self.log_lines()) if re.match(r"E\d{4} ", line)), None)
        raise BackendUnavailable(
            f"tritonserver's models were not ready after {self.ready_timeout_s:.0f} s"
            + (f"; its last error line: {last_error}" if last_error else "")
        )

    def log_lines(self) -> list[str]:
        """The server's log so far (its last lines when it goes to this process's output)."""
        if self.log_file is not None and self.log_file.is_file():
            return self.log_file.read_text(errors="replace").splitlines()
        if self._log_tail is not None:
            return self._log_tail.lines()
        return []

    def exit_reason(self) -> str:
        """Why the server ended (see `exit_reason`), once it has."""
        status = self.process.wait() if self.process is not None else 0
        if self._log_tail is not None:
            self._log_tail.finish()
        return exit_reason(status, self.log_lines())

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM, as tritonserver expects: it finishes in-flight requests (up to exit_timeout_s), unloads
        its models (their stub processes end) and frees its ports; killed if it does not end in time."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(self.exit_timeout_s + 15)
                except subprocess.TimeoutExpired:
                    os.killpg(self.process.pid, signal.SIGKILL)  # the server and its stubs
                    self.process.wait()
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
