"""`serve`: Metric3D (torch, CPU, synthetic vit-small) behind PyTriton's real tritonserver on loopback
ports: concurrent HTTP and gRPC requests of two image sizes batched into one predict and equal to it,
bad requests refused on their own (by Triton, or by us naming the fix), and a clean stop on SIGTERM."""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from support.reference import REPO_ROOT
from support.tritonserver_support import (
    FX,
    IMAGES,
    alive,
    assert_like_predict,
    descendants,
    predict_each,
    send_together,
    started,
)
from trt_metric3d.errors import BackendUnavailable
from trt_metric3d.serving import Metric3DClient, serve
from trt_metric3d.serving.interface import MODEL_NAME
from trt_metric3d.serving.metric3d_server import serve_config
from trt_metric3d.serving.model_config import to_pbtxt
from trt_metric3d.serving.tritonserver_process import free_ports

MAX_BATCH = 4


@pytest.fixture(scope="module")
def server(small_checkpoint, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "tritonserver.log"
    options = {"max_batch_size": MAX_BATCH, "max_queue_delay_us": 1_000_000, "log_path": log}
    running = serve(
        "vit-small",
        "torch",
        "fp32",
        "cpu",
        small_checkpoint,
        ports=free_ports(),
        address="127.0.0.1",
        **options,
    )
    with started(running) as server:
        yield server


@pytest.fixture(scope="module")
def expected(small_checkpoint) -> list:
    return predict_each(small_checkpoint)


@pytest.mark.parametrize("max_batch_size", [1, 4])
def test_the_config_is_a_ragged_batching_python_model(max_batch_size):
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from google.protobuf import text_format

    options = {
        "backbone": "vit-small",
        "backend": "torch",
        "precision": "",
        "device": "cpu",
        "checkpoint": "/w.pth",
    }
    text = to_pbtxt(serve_config(options, max_batch_size, 1500))
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert (
        config.name == MODEL_NAME and config.backend == "python" and config.max_batch_size == max_batch_size
    )
    assert [(i.name, i.allow_ragged_batch) for i in config.input] == [
        ("IMAGE", True),
        ("FX", False),
        ("FY", False),
    ]
    assert [o.name for o in config.output] == ["DEPTH", "CONFIDENCE", "NORMAL"]
    assert {key: value.string_value for key, value in config.parameters.items()} == options
    (group,) = config.instance_group
    assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_CPU and group.count == 1
    batching = config.HasField("dynamic_batching")
    assert batching == (max_batch_size > 1)
    assert not batching or config.dynamic_batching.max_queue_delay_microseconds == 1500


def refusal(server, protocol: str, inputs: dict[str, tuple[np.ndarray, str]]):
    """The server's error for a request of raw `inputs` (name -> (array, Triton type))."""
    from tritonclient.utils import InferenceServerException

    with Metric3DClient(server.url(protocol), protocol) as client:
        tensors = []
        for name, (array, data_type) in inputs.items():
            tensors.append(client.protocol.InferInput(name, list(array.shape), data_type))
            tensors[-1].set_data_from_numpy(array)
        with pytest.raises(InferenceServerException) as refused:
            client.client.infer(MODEL_NAME, tensors)
    return refused.value


# Triton's answers to an IMAGE sent without its batch dimension, as docs/triton.md quotes them
NO_BATCH_DIMENSION = "input 'IMAGE' batch size does not match other inputs for 'metric3d'"
NO_BATCH_WITH_FOCALS_PER_ROW = "inference request batch-size must be <= 4 for 'metric3d'"


def test_the_docs_quote_triton_s_answers_to_a_missing_batch_dimension_and_name_the_fix():
    table = (REPO_ROOT / "docs" / "triton.md").read_text().split("## The request")[1].split("\n## ")[0]
    rows = [row for row in table.splitlines() if row.startswith("| `IMAGE` ") and "H x W x 3" in row]
    for message in (NO_BATCH_DIMENSION, NO_BATCH_WITH_FOCALS_PER_ROW):
        (row,) = [row for row in rows if f"`{message}`" in row]
        assert "send `image[None]`" in row, row


def good_inputs(image: np.ndarray = IMAGES[0]) -> dict:
    focal = np.array([[FX]], np.float32)
    return {"IMAGE": (image[None], "UINT8"), "FX": (focal, "FP32"), "FY": (focal, "FP32")}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_triton_refuses_requests_that_break_the_config(server, protocol):
    """Type, rank, channels, a missing input and the batch limit: Triton's own messages, nothing runs."""
    floats = good_inputs() | {"IMAGE": (IMAGES[0][None].astype(np.float32), "FP32")}
    assert "inference input 'IMAGE' data-type is 'FP32', but model 'metric3d' expects 'UINT8'" in (
        refusal(server, protocol, floats).message()
    )
    rgba = good_inputs() | {"IMAGE": (np.zeros((1, 48, 64, 4), np.uint8), "UINT8")}
    assert (
        "unexpected shape for input 'IMAGE' for model 'metric3d'. Expected [-1,-1,-1,3], got [1,48,64,4]"
        in (refusal(server, protocol, rgba).message())
    )
    no_batch = good_inputs() | {"IMAGE": (IMAGES[0], "UINT8")}  # 48 x 64 x 3 read as 48 images of 64 x 3
    assert NO_BATCH_DIMENSION in refusal(server, protocol, no_batch).message()
    rows = len(IMAGES[0])  # ... and focal lengths for as many "images": all agree on a batch of 48
    focals = {name: (np.full((rows, 1), FX, np.float32), "FP32") for name in ("FX", "FY")}
    assert NO_BATCH_WITH_FOCALS_PER_ROW in refusal(server, protocol, no_batch | focals).message()
    no_fy = {name: value for name, value in good_inputs().items() if name != "FY"}
    assert "missing required input(s) ['FY']" in refusal(server, protocol, no_fy).message()
    too_many = {
        name: (np.repeat(array, MAX_BATCH + 1, axis=0), kind) for name, (array, kind) in good_inputs().items()
    }
    assert "inference request batch-size must be <= 4" in refusal(server, protocol, too_many).message()


def test_concurrent_requests_batch_into_one_predict_and_a_bad_one_fails_alone(server, expected):
    """Three good requests (two sizes, HTTP and gRPC) and a bad one (fx <= 0) arrive together: one batch,
    one predict; the bad one gets our message, the others predict's answer."""
    requests = [(0, "http"), (1, "grpc"), (1, "http")]  # (image, protocol)

    def ask_badly() -> Exception:
        bad = good_inputs(IMAGES[1]) | {"FX": (np.array([[-2.0]], np.float32), "FP32")}
        return refusal(server, "grpc", bad)

    with Metric3DClient(server.url("http")) as client:
        before = client.client.get_inference_statistics(MODEL_NAME)["model_stats"][0]
    answers, refused = send_together(server, requests, ask_badly)
    with Metric3DClient(server.url("http")) as client:
        after = client.client.get_inference_statistics(MODEL_NAME)["model_stats"][0]
    assert int(after["execution_count"]) - int(before["execution_count"]) == 1, "not one batch"
    (error,) = refused
    assert "fx[0] must be a finite focal length in pixels > 0, got -2.0" in error.message()
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert_like_predict(answers, requests, expected)


def port_is_free(port: int) -> bool:
    """Whether a new server could listen on `port` (as servers bind: SO_REUSEADDR)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def serving_cli(checkpoint) -> tuple[subprocess.Popen, list[str], object]:
    """`trt-metric3d serve` (torch, CPU) on free loopback ports, read until it says it serves: (the
    command, its output so far, its ports); its own watchdog kills it after 120 s."""
    ports = free_ports()
    command = [
        sys.executable,
        "-c",
        "from trt_metric3d.cli import main; main()",
        "serve",
        "--backend",
        "torch",
    ]
    command += ["--device", "cpu", "--checkpoint", str(checkpoint), "--host", "127.0.0.1"]
    command += ["--http-port", str(ports.http), "--grpc-port", str(ports.grpc)]
    command += ["--metrics-port", str(ports.metrics)]
    cli = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watchdog = threading.Timer(120, cli.kill)  # a server that never comes up fails the test, not CI
    watchdog.daemon = True
    watchdog.start()
    output = []
    for line in cli.stdout:  # until the command says it serves (the server is ready then)
        output.append(line)
        if line.startswith("serving Metric3D"):
            break
    assert cli.poll() is None, "".join(output)[-3000:]
    return cli, output, ports


def test_cli_serves_until_sigterm_then_frees_ports_and_leaves_no_process(small_checkpoint):
    pytest.importorskip("pytriton", reason="the serve extra is not installed")
    cli, output, ports = serving_cli(small_checkpoint)
    try:
        # Triton's start-up log (glog lines: I1201 12:00:00 ...) is not printed without --verbose
        assert not [line for line in output if re.match(r"[IWE]\d{4} ", line)], "".join(output)[-3000:]
        server_processes = descendants(cli.pid)  # tritonserver and its Python stub
        assert len(server_processes) >= 2
        cli.send_signal(signal.SIGTERM)
        output = "".join(output) + cli.communicate(timeout=60)[0]
    finally:
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == 0, output[-3000:]
    assert "serving Metric3D vit-small as model 'metric3d'" in output and "tritonserver stopped" in output
    assert not alive(server_processes), "tritonserver or a stub outlived the command"
    assert all(port_is_free(port) for port in (ports.http, ports.grpc, ports.metrics))


def test_a_killed_server_ends_the_cli_with_its_signal(small_checkpoint):
    pytest.importorskip("pytriton", reason="the serve extra is not installed")
    cli, output, _ = serving_cli(small_checkpoint)
    try:
        (server,) = [
            pid
            for pid in descendants(cli.pid)
            if Path(os.readlink(f"/proc/{pid}/exe")).name == "tritonserver"
        ]
        os.kill(server, signal.SIGKILL)
        output = "".join(output) + cli.communicate(timeout=60)[0]
    finally:
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == 1, output[-3000:]
    assert output.strip().splitlines()[-1] == (
        "Error: tritonserver ended by itself: killed by SIGKILL (sent by another process, or the kernel's "
        "out-of-memory killer); its log names no reason"
    )


def test_a_model_that_fails_in_the_server_names_its_own_error(tmp_path):
    """A checkpoint that reads (serve's check passes) but fits no Metric3D: the stub's error is the reason."""
    checkpoint = tmp_path / "other.pth"
    torch.save({"model_state_dict": {"w": torch.ones(3)}}, checkpoint)
    pytest.importorskip("pytriton", reason="the serve extra is not installed")
    server = serve("vit-small", "torch", "fp32", "cpu", checkpoint, ports=free_ports(), address="127.0.0.1")
    with pytest.raises(BackendUnavailable) as caught, server:
        pass
    message = str(caught.value)
    assert message.startswith(
        "tritonserver ended before its models were ready: exit status 1; model 'metric3d' could not load: "
        "CheckpointError: checkpoint does not fit"
    ), message
    assert "\n" not in message
