"""What `serve` and the client check before a server runs, and how a server's end is told: in the test
environment, without PyTriton (the running server is in test_serve.py)."""

import signal

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from trt_metric3d.checkpoint import CheckpointError, read_state_dict
from trt_metric3d.cli import main
from trt_metric3d.errors import InputError
from trt_metric3d.serving import serve
from trt_metric3d.serving.client import request_arrays
from trt_metric3d.serving.tritonserver_process import Ports, exit_reason

# tritonserver's lines (abridged) when the model's initialize raised, as its log has them
MODEL_FAILED_LOG = [
    'I1201 20:27:13.255328 24417 server.cc:241] "CudaDriverHelper has not been initialized."',
    "E1201 20:27:25.563608 24417 model_lifecycle.cc:642] \"failed to load 'metric3d' version 1: Internal: "
    'CheckpointError: /tmp/bad.pth is not a readable PyTorch checkpoint; run pip install \\"x[y]\\"'
    '\\n\\nAt:\\n  /work/trt_metric3d/checkpoint.py(193): read_state_dict\\n"',
    "| metric3d | 1       | UNAVAILABLE: Internal: CheckpointError: /tmp/bad.pth is not a readable |",
    "error: creating server: Internal - failed to load all models",
]


def test_the_model_s_own_error_is_the_reason_a_server_ended():
    assert exit_reason(1, MODEL_FAILED_LOG) == (
        "exit status 1; model 'metric3d' could not load: CheckpointError: /tmp/bad.pth is not a readable "
        'PyTorch checkpoint; run pip install "x[y]"'
    )


def test_without_a_model_error_the_server_s_last_error_or_signal_is_the_reason():
    assert exit_reason(1, MODEL_FAILED_LOG[:1] + MODEL_FAILED_LOG[3:]) == (
        "exit status 1: creating server: Internal - failed to load all models"
    )
    killed = exit_reason(-signal.SIGKILL, MODEL_FAILED_LOG[:1])
    assert killed == (
        "killed by SIGKILL (sent by another process, or the kernel's out-of-memory killer); "
        "its log names no reason"
    )
    assert exit_reason(-signal.SIGSEGV, []) == "killed by SIGSEGV; its log names no reason"
    assert exit_reason(0, []) == "exit status 0; its log names no reason"


@pytest.mark.parametrize(
    ("ports", "message"),
    [
        ((9000, 9000, 9002), "--http-port and --grpc-port are both 9000: give each endpoint its own port"),
        ((9000, 9001, 9000), "--http-port and --metrics-port are both 9000"),
        ((9000, 70000, 9002), "--grpc-port 70000 is not a port: choose one from 1 to 65535"),
    ],
)
def test_ports_are_each_their_own(ports, message):
    with pytest.raises(InputError, match=message):
        Ports(*ports)


def test_serve_refuses_one_port_for_two_endpoints_in_one_line_before_anything_starts():
    args = ["serve", "--http-port", "9000", "--grpc-port", "9000", "--device", "cpu"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert result.output == (
        "Error: --http-port and --grpc-port are both 9000: give each endpoint its own port\n"
    )


def test_a_damaged_checkpoint_is_refused_before_a_server_starts(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x89 not a checkpoint" * 50)
    with pytest.raises(CheckpointError, match="bad.pth is not a readable PyTorch checkpoint"):
        with serve("vit-small", "torch", device="cpu", checkpoint=bad):
            pass


@pytest.mark.parametrize("zip_format", [True, False])
def test_the_check_maps_the_tensors_where_the_format_allows(tmp_path, zip_format):
    """serve's check maps the tensors of a zip-format file instead of reading them (the server loads
    them), and reads a legacy one (which torch cannot map) as it is."""
    path = tmp_path / "weights.pth"
    torch.save({"model_state_dict": {"w": torch.ones(4)}}, path, _use_new_zipfile_serialization=zip_format)
    tensors = read_state_dict(path, mmap=True)
    assert tensors["w"].tolist() == [1.0] * 4


def test_the_client_sends_one_image_with_its_batch_dimension():
    image = np.zeros((5, 7, 3), np.uint8)
    arrays = request_arrays(image, 500.0)
    assert arrays["IMAGE"].shape == (1, 5, 7, 3) and arrays["IMAGE"].dtype == np.uint8
    assert arrays["FX"].tolist() == [[500.0]] == arrays["FY"].tolist()
    floats = request_arrays(np.ones((5, 7, 3), np.float32), 500.0, 600.0)  # as predict takes them
    assert floats["IMAGE"].dtype == np.uint8 and floats["IMAGE"].max() == 255
    assert floats["FY"].tolist() == [[600.0]]


def test_the_client_names_the_fix_for_a_batch_instead_of_triton_s_batch_size_message():
    with pytest.raises(InputError, match=r"got shape \(1, 5, 7, 3\); it looks like a batch"):
        request_arrays(np.zeros((1, 5, 7, 3), np.uint8), 500.0)
