"""The cluster a Ray job runs on: connection failures and failed actors end in one line of our own.

Most run below Ray (a stand-in `ray` module records what ray.init was asked); the two that start or
reach a real cluster are slow.
"""

import os
import socket
import subprocess
import sys
import warnings

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from trt_metric3d import raycluster
from trt_metric3d.cli import main
from trt_metric3d.errors import BackendUnavailable, MissingDependency

CLIENT_WARNING = "Ray Client connection timed out. Ensure that the Ray Client port ..."


class StandInRay:
    """`ray` as ray_cluster uses it: init records its arguments and the Ray settings in the environment,
    then warns and fails as Ray Client does when nothing answers (or connects, when `error` is None)."""

    def __init__(self, error: Exception | None = None):
        self.error = error
        self.calls = []
        self.shut_down = False

    def is_initialized(self) -> bool:
        return False

    def init(self, **kwargs):
        self.calls.append((kwargs, {name: os.environ.get(name) for name in raycluster._QUIET_RAY}))
        warnings.warn(CLIENT_WARNING, UserWarning, stacklevel=2)
        if self.error is not None:
            raise self.error

    def shutdown(self):
        self.shut_down = True


@pytest.fixture
def stand_in(monkeypatch):
    def install(error=None):
        ray = StandInRay(error)
        monkeypatch.setattr(raycluster, "import_ray", lambda: ray)
        for name in raycluster._QUIET_RAY:
            monkeypatch.delenv(name, raising=False)
        return ray

    return install


def test_an_unreachable_cluster_is_one_error_naming_the_address(stand_in):
    stand_in(ConnectionError("ray client connection timeout"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Ray Client's warning is not shown beside the error
        with pytest.raises(BackendUnavailable) as caught, raycluster.ray_cluster("auto"):
            pass
    message = str(caught.value)
    assert message.startswith("could not connect to the Ray cluster at auto: ray client connection timeout;")
    assert "check the address" in message and "\n" not in message


def test_a_local_cluster_that_cannot_start_says_so(stand_in):
    stand_in(RuntimeError("Failed to start the GCS\nmore of Ray's lines"))
    with pytest.raises(
        BackendUnavailable, match=r"^could not start a local Ray cluster: Failed to start the GCS$"
    ):
        with raycluster.ray_cluster():
            pass


def test_ray_client_addresses_without_ray_client_ask_for_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "grpc", None)  # Ray Client's one dependency, not installed
    with pytest.raises(MissingDependency, match=r"ray://127\.0\.0\.1:1 is reached through Ray Client"):
        with raycluster.ray_cluster("ray://127.0.0.1:1"):
            pass
    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((8, 8, 3), np.uint8))
    args = ["ray", str(tmp_path / "x.png"), "--out", str(tmp_path / "out"), "--fx", "100"]
    result = CliRunner().invoke(main, [*args, "--address", "ray://127.0.0.1:1"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    (line,) = result.output.strip().splitlines()  # before the job's header line
    assert line.endswith('pip install "trt-metric3d[ray]"')


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once it is closed


def test_an_address_nothing_answers_at_is_refused_at_once_before_the_job(tmp_path):
    """Ray itself would retry a HOST:PORT that nothing answers at for minutes, printing its warnings."""
    port = closed_port()
    with pytest.raises(
        BackendUnavailable, match=rf"^could not connect to the Ray cluster at 127\.0\.0\.1:{port}: "
    ):
        raycluster.check_address(f"127.0.0.1:{port}")
    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((8, 8, 3), np.uint8))
    args = ["ray", str(tmp_path / "x.png"), "--out", str(tmp_path / "out"), "--fx", "100"]
    result = CliRunner().invoke(main, [*args, "--address", f"127.0.0.1:{port}"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    (line,) = result.output.strip().splitlines()  # no header line of a job that cannot start
    assert line.startswith(f"Error: could not connect to the Ray cluster at 127.0.0.1:{port}: ")


def test_an_address_that_answers_or_that_ray_resolves_passes_the_check():
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        raycluster.check_address(f"127.0.0.1:{listening.getsockname()[1]}")
    for address in (None, "auto", "local"):
        raycluster.check_address(address)


def test_without_debug_ray_keeps_its_log_to_its_files(stand_in, monkeypatch):
    ray = stand_in()
    retries = "RAY_enable_output_error_log_if_still_retry"
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with raycluster.ray_cluster("auto", worker_logs=False):
            pass
    ((kwargs, environment),) = ray.calls
    assert kwargs["address"] == "auto" and kwargs["log_to_driver"] is False
    assert environment == {retries: "0"} and retries not in os.environ  # set for ray.init only
    assert ray.shut_down and [str(w.message) for w in shown] == [CLIENT_WARNING]  # it connected: shown
    monkeypatch.setenv(retries, "1")  # the user's own setting wins
    with warnings.catch_warnings(record=True), raycluster.ray_cluster("auto", worker_logs=False):
        pass
    assert ray.calls[1][1] == {retries: "1"}
    monkeypatch.delenv(retries)
    with warnings.catch_warnings(record=True), raycluster.ray_cluster("auto"):  # the library's default:
        pass  # the actors' output as Ray shows it
    assert ray.calls[2][0]["log_to_driver"] is True and ray.calls[2][1] == {retries: None}


@pytest.mark.slow
def test_actors_that_cannot_open_the_model_end_the_cli_in_our_line_only(tmp_path):
    """A real local cluster (about a minute): no remote traceback, no retry lines, only our reason."""
    pytest.importorskip("ray.data")
    cv2.imwrite(str(tmp_path / "x.png"), np.full((8, 8, 3), 128, np.uint8))
    (tmp_path / "bad.pth").write_bytes(b"\x89 not a checkpoint" * 50)
    args = ["ray", "x.png", "--out", "out", "--fx", "100", "--device", "cpu", "--checkpoint", "bad.pth"]
    command = [sys.executable, "-c", "from trt_metric3d.cli import main; main()", *args]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode == 1
    assert lines[-1].startswith("Error: the Ray actors could not open the model: ")
    assert "bad.pth is not a readable PyTorch checkpoint" in lines[-1]
    assert "Traceback" not in result.stdout + result.stderr
    assert len(lines) <= 4, "\n".join(lines)  # the header, at most two start-up lines of Ray, ours
