"""Ray itself for `trt_metric3d.ray` and `trt-metric3d ray`: the import, with the extra's pip command
when it is missing, and the cluster a job runs on (`ray_cluster`), whose failures end in one line.

    pip install "trt-metric3d[ray]"
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import socket
import warnings
from collections.abc import Iterator
from typing import Any

from .errors import BackendUnavailable, MissingDependency

INSTALL = 'pip install "trt-metric3d[ray]"'


def import_ray():
    """The `ray` module with Ray Data loaded, or MissingDependency with the pip command."""
    try:
        import ray
        import ray.data
    except ImportError as e:  # also a Ray whose pyarrow does not fit the installed numpy
        raise MissingDependency(f"Ray Data cannot be imported ({e}): {INSTALL}") from e
    return ray


# Ray's own lines in this process that it can be told to keep to its log files unless the user asks
# (worker_logs): the driver's "Task ... failed. There are infinite retries remaining" with the remote
# traceback, for each retry of a call to a dead actor (Ray Data asks a pool actor that failed to start
# for its location). The job's own error says what failed, once. A user's own setting is kept.
_QUIET_RAY = {"RAY_enable_output_error_log_if_still_retry": "0"}


PROBE_TIMEOUT_S = 5.0


def _unreachable(address: str, reason: str) -> BackendUnavailable:
    return BackendUnavailable(
        f"could not connect to the Ray cluster at {address}: {reason.rstrip('.')}; check the address "
        "(auto: the cluster `ray start` runs on this machine; ray://HOST:10001: its head's Ray Client port)"
    )


def check_address(address: str | None) -> None:
    """What can be known of a cluster's `address` before Ray starts (quickly): that Ray Client is installed
    for a ray:// one, and that a HOST:PORT answers at all (Ray retries an unreachable one for minutes).
    Addresses of other forms ("auto", "local", ...) are Ray's to resolve."""
    if address is None:
        return
    client = address.startswith("ray://")
    if client and importlib.util.find_spec("grpc") is None:
        raise MissingDependency(
            f"{address} is reached through Ray Client (ray[client]), which is not installed: {INSTALL}"
        )
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if "://" in host or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S).close()
    except OSError as e:
        raise _unreachable(address, e.strerror or str(e) or type(e).__name__) from e


def _connect(ray: Any, address: str | None, worker_logs: bool, logging_level: int) -> None:
    """ray.init for `ray_cluster`; a cluster that cannot be reached or started is one BackendUnavailable."""
    check_address(address)
    saved = {name: os.environ.get(name) for name in _QUIET_RAY}
    if not worker_logs:
        for name, value in _QUIET_RAY.items():
            os.environ.setdefault(name, value)
    try:
        # Ray Client warns before it fails ("connection timed out. Ensure that the Ray Client port ...");
        # the error below says it, so its warnings are shown only when it connects
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # all of them held here; the caller's filters apply below
            ray.init(
                address=address,
                include_dashboard=False,
                logging_level=logging_level,
                log_to_driver=worker_logs,
            )
        for warning in caught:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if address is None:
            raise BackendUnavailable(f"could not start a local Ray cluster: {reason}") from e
        raise _unreachable(address, reason) from e
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def ray_cluster(
    address: str | None = None, worker_logs: bool = True, verbose: bool = False
) -> Iterator[None]:
    """Ray for the block: connected to `address` ("auto": the cluster started on this machine with
    `ray start`; "ray://host:10001": a remote one), else a new local cluster, shut down after. A Ray
    already initialised (a notebook, a test) is used as it is and left running.

    worker_logs: the actors' output (their prints and logs, Ray's tracebacks of a failed actor) is
    shown here; False keeps it in Ray's log files (/tmp/ray/session_latest/logs), and the job's
    errors still end in their own one-line reason.
    verbose: Ray's own warnings (e.g. that token authentication is on, at every start) are shown; its
    errors always are.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield
        return
    _connect(ray, address, worker_logs, logging.WARNING if verbose else logging.ERROR)
    try:
        yield
    finally:
        ray.shutdown()
