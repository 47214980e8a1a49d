"""`serve`: Metric3D (torch, CPU, synthetic vit-small) behind PyTriton's real tritonserver on loopback
ports: concurrent HTTP and gRPC requests of two image sizes batched into one predict and equal to it,
bad requests refused on their own (by Triton, or by us naming the fix), and a clean stop on SIGTERM."""

import re
import signal
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest
from tritonserver_support import (
    FX,
    IMAGES,
    alive,
    assert_like_predict,
    descendants,
    predict_each,
    send_together,
    started,
)

from trt_metric3d.serving import Metric3DClient, serve
from trt_metric3d.serving.interface import MODEL_NAME
from trt_metric3d.serving.model_config import to_pbtxt
from trt_metric3d.serving.server import serve_config
from trt_metric3d.serving.tritonserver import free_ports

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
    assert (
        "input 'IMAGE' batch size does not match other inputs"
        in refusal(server, protocol, no_batch).message()
    )
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


def test_cli_serves_until_sigterm_then_frees_ports_and_leaves_no_process(small_checkpoint):
    pytest.importorskip("pytriton", reason="the serve extra is not installed")
    ports = free_ports()
    command = [
        sys.executable,
        "-c",
        "from trt_metric3d.cli import main; main()",
        "serve",
        "--backend",
        "torch",
    ]
    command += ["--device", "cpu", "--checkpoint", str(small_checkpoint), "--host", "127.0.0.1"]
    command += [
        "--http-port",
        str(ports.http),
        "--grpc-port",
        str(ports.grpc),
        "--metrics-port",
        str(ports.metrics),
    ]
    cli = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watchdog = threading.Timer(120, cli.kill)  # a server that never comes up fails the test, not CI
    watchdog.start()
    try:
        output = []
        for line in cli.stdout:  # until the command says it serves (the server is ready then)
            output.append(line)
            if line.startswith("serving Metric3D"):
                break
        assert cli.poll() is None, "".join(output)[-3000:]
        # Triton's start-up log (glog lines: I1201 12:00:00 ...) is not printed without --verbose
        assert not [line for line in output if re.match(r"[IWE]\d{4} ", line)], "".join(output)[-3000:]
        server_processes = descendants(cli.pid)  # tritonserver and its Python stub
        assert len(server_processes) >= 2
        cli.send_signal(signal.SIGTERM)
        output = "".join(output) + cli.communicate(timeout=60)[0]
    finally:
        watchdog.cancel()
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == 0, output[-3000:]
    assert "serving Metric3D vit-small as model 'metric3d'" in output and "tritonserver stopped" in output
    assert not alive(server_processes), "tritonserver or a stub outlived the command"
    assert all(port_is_free(port) for port in (ports.http, ports.grpc, ports.metrics))
