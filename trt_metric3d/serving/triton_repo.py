"""`trt-metric3d triton-repo`: a Triton model repository for tritonserver, around a cached TensorRT engine.

    OUT/metric3d/config.pbtxt               ensemble: IMAGE, FX, FY -> DEPTH, CONFIDENCE, NORMAL
    OUT/metric3d_preprocess/config.pbtxt    Python backend: images -> 616 x 1064 canvases
    OUT/metric3d_preprocess/1/model.py
    OUT/metric3d_engine/config.pbtxt        tensorrt_plan, dynamic batching on the GPU
    OUT/metric3d_engine/1/model.plan
    OUT/metric3d_postprocess/config.pbtxt   Python backend: canvas outputs -> the images' size, metres
    OUT/metric3d_postprocess/1/model.py
    OUT/README.txt

The configs come from the engine's cache sidecar (its shape profile, TensorRT version, GPU), so they
are written and tested without TensorRT; only building the engine needs it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..engine.builder import ShapeProfile, TensorRTNotInstalled, import_tensorrt
from ..engine.cache import read_sidecar
from ..engine.pipeline import build
from ..errors import InputError, MissingDependency
from ..export import INPUT_NAME
from ..io import atomic_write_bytes
from ..output_files import OVERWRITE_FIX, OutputFolder, check_output_folder, refuse_inputs_as_outputs
from ..processing import CANVAS_HW
from .ensemble_steps import (
    CANVAS,
    CANVAS_OUTPUTS,
    IMAGE_SIZE,
    PLAN_INPUTS,
    PLAN_OUTPUTS,
    POSTPROCESS_INPUTS,
    PREPROCESS_OUTPUTS,
    SCALE,
)
from .interface import CONFIDENCE, DEPTH, FX, FY, IMAGE, MODEL_NAME, NORMAL, request_inputs, response_outputs
from .model_config import DEFAULT_QUEUE_DELAY_US, VERSION, Enum, map_entries, write_model

PREPROCESS, ENGINE, POSTPROCESS = (f"{MODEL_NAME}_{step}" for step in ("preprocess", "engine", "postprocess"))
TRITON_TENSORRT = (
    "Triton's tensorrt_plan backend loads engines of TensorRT, not TensorRT-RTX: install the TensorRT "
    "of your Triton release (pip install tensorrt-cu12, or tensorrt-cu13)"
)


def engine_profile(engine: str | os.PathLike) -> tuple[dict, ShapeProfile]:
    """(sidecar spec, shape profile) of a cached engine, refused (InputError) where Triton cannot serve it:
    a TensorRT-RTX engine, a profile whose batch does not start at 1 or that misses the canvas."""
    engine = Path(engine)
    spec = read_sidecar(engine.with_suffix(".json"))
    if spec is None:
        raise InputError(f"{engine} has no readable cache sidecar (.json): build it with trt-metric3d build")
    if spec["flavour"] != "tensorrt":
        raise InputError(f"{engine} is a {spec['flavour']} engine; {TRITON_TENSORRT}")
    profile = ShapeProfile(**{key: tuple(spec["profile"][key]) for key in ("min", "opt", "max")})
    check_profile(profile)
    return spec, profile


def check_profile(profile: ShapeProfile) -> None:
    """Triton sends the plan 1 to max-batch canvases of 616 x 1064: the profile must allow them all."""
    if profile.min[0] != 1:
        raise InputError(
            f"the profile's minimum batch is {profile.min[0]}; Triton sends single images: use --min 1xHxW"
        )
    for axis, side in ((1, "height"), (2, "width")):
        low, high, canvas = profile.min[axis], profile.max[axis], CANVAS_HW[axis - 1]
        if not low <= canvas <= high:
            raise InputError(
                f"the profile's {side} range {low}..{high} misses the {CANVAS_HW[0]}x{CANVAS_HW[1]} canvas "
                "every image is put on: widen --min / --max to include it"
            )


def repository_configs(
    profile: ShapeProfile, instances: int = 1, max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
) -> list[dict]:
    """The four models' configs (dicts for `to_pbtxt`): the ensemble, its two Python steps, the plan.

    instances: copies of each model (the plan's on every GPU) that work at the same time.
    """
    max_batch = profile.max[0]
    python_instances = [{"kind": Enum("KIND_CPU"), "count": instances}]
    preprocess = {
        "name": PREPROCESS,
        "backend": "python",
        "max_batch_size": max_batch,
        "input": request_inputs(),
        "output": PREPROCESS_OUTPUTS,
        "instance_group": python_instances,
    }
    engine = {
        "name": ENGINE,
        "platform": "tensorrt_plan",
        "max_batch_size": max_batch,
        "input": PLAN_INPUTS,
        "output": PLAN_OUTPUTS,
        "dynamic_batching": {
            # the batch the engine is tuned for and the largest it takes
            "preferred_batch_size": sorted({profile.opt[0], max_batch}),
            "max_queue_delay_microseconds": max_queue_delay_us,
        },
        "instance_group": [{"kind": Enum("KIND_GPU"), "count": instances}],
    }
    postprocess = {
        "name": POSTPROCESS,
        "backend": "python",
        "max_batch_size": max_batch,
        "input": POSTPROCESS_INPUTS,
        "output": response_outputs(),
        "instance_group": python_instances,
    }
    plan_outputs = {name: CANVAS_OUTPUTS[name].lower() for name in CANVAS_OUTPUTS}
    steps = [
        {
            "model_name": PREPROCESS,
            "model_version": -1,
            "input_map": map_entries({IMAGE: IMAGE, FX: FX, FY: FY}),
            "output_map": map_entries({CANVAS: "canvas", IMAGE_SIZE: "image_size", SCALE: "scale"}),
        },
        {
            "model_name": ENGINE,
            "model_version": -1,
            "input_map": map_entries({INPUT_NAME: "canvas"}),
            "output_map": map_entries(plan_outputs),  # normal_iter1 is left unused
        },
        {
            "model_name": POSTPROCESS,
            "model_version": -1,
            "input_map": map_entries(
                {
                    **{CANVAS_OUTPUTS[name]: tensor for name, tensor in plan_outputs.items()},
                    IMAGE_SIZE: "image_size",
                    SCALE: "scale",
                }
            ),
            "output_map": map_entries({DEPTH: DEPTH, CONFIDENCE: CONFIDENCE, NORMAL: NORMAL}),
        },
    ]
    ensemble = {
        "name": MODEL_NAME,
        "platform": "ensemble",
        "max_batch_size": max_batch,
        "input": request_inputs(),
        "output": response_outputs(),
        "ensemble_scheduling": {"step": steps},
    }
    return [ensemble, preprocess, engine, postprocess]


def _check_options(instances: int, max_queue_delay_us: int) -> None:
    if instances < 1:
        raise InputError(f"instances {instances}: it must be >= 1")
    if max_queue_delay_us < 0:
        raise InputError(f"max_queue_delay_us {max_queue_delay_us}: it must be >= 0")


def _readme(out: Path, spec: dict, profile: ShapeProfile, instances: int) -> str:
    trt, gpu = spec["trt_version"], f"{spec['gpu_name']} (sm{spec['compute_capability']})"
    return f"""\
Metric3D {spec["backbone"]} ({spec["precision"]}) for NVIDIA Triton Inference Server, written by
`trt-metric3d triton-repo`.

Models
  {MODEL_NAME:<20}  the ensemble clients call: {IMAGE}, {FX}, {FY} -> {DEPTH}, {CONFIDENCE}, {NORMAL}
  {PREPROCESS:<20}  Python backend: each image onto the network's {CANVAS_HW[0]} x {CANVAS_HW[1]} canvas
  {ENGINE:<20}  TensorRT {trt} engine built on {gpu}: batches
  {"":<20}  of 1 to {profile.max[0]} canvases (Triton's dynamic batcher), {instances} instance(s) per GPU
  {POSTPROCESS:<20}  Python backend: depth (metres), confidence, normals at the image's size

Every image, portrait or landscape, is letterboxed onto the same canvas (as Metric3D.predict does),
so the engine batches requests of any image sizes together. The answers are Metric3D.predict's
(batching moves only the last float bits).

Requirements
  - A Triton release whose TensorRT is {trt}, on a GPU like {gpu}:
    an engine loads only in the TensorRT version that built it, on that GPU model. Otherwise run
    `trt-metric3d triton-repo` again where Triton runs.
  - trt-metric3d installed in the Python of Triton's Python backend (the pre- and post-processing
    import it; torch's CPU wheel is enough for them), e.g. in NVIDIA's tritonserver container:
        pip install trt-metric3d

Start
  tritonserver --model-repository {out}
  docker run --gpus all --rm -p 8000:8000 -p 8001:8001 -p 8002:8002 -v {out}:/models \\
      nvcr.io/nvidia/tritonserver:<release>-py3 \\
      bash -c "pip install trt-metric3d && tritonserver --model-repository /models"

Request to model "{MODEL_NAME}" (batch dimension first; the images of one request share a size):
  {IMAGE:<10}  UINT8 [B, H, W, 3]  RGB
  {FX:<10}  FP32  [B, 1]        focal length in pixels
  {FY:<10}  FP32  [B, 1]
Answer, at the images' size:
  {DEPTH:<10}  FP32  [B, H, W]     metres
  {CONFIDENCE:<10}  FP32  [B, H, W]
  {NORMAL:<10}  FP32  [B, H, W, 3]  unit surface normals, camera frame
A bad image or focal length gets an error answer naming it; the other requests go on.

Python client (pip install "trt-metric3d[serve]"):
  from trt_metric3d.serving import Metric3DClient
  depth = Metric3DClient("localhost:8000").predict(rgb_uint8_image, fx=1400.0).depth
"""


def check_repository_folder(
    out: str | os.PathLike, overwrite: bool, inputs: Sequence[str | os.PathLike | None]
) -> Path:
    """`out` as a folder the repository can become (see output_files.OutputFolder): new or empty, or
    replaced whole with `overwrite`, and holding none of `inputs`."""
    refuse_inputs_as_outputs([], inputs, {"the repository folder": out})
    return check_output_folder(out, overwrite, OVERWRITE_FIX)


def write_repository(
    out: str | os.PathLike,
    engine: str | os.PathLike,
    instances: int = 1,
    max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
    overwrite: bool = False,
) -> Path:
    """The model repository in `out` around a cached `engine` (with its .json sidecar); see the module
    docstring for the layout. The repository is one output: written beside `out` and put in its
    place whole, so a failure leaves an earlier one as it was; a non-empty `out` is replaced only
    with `overwrite`."""
    _check_options(instances, max_queue_delay_us)
    spec, profile = engine_profile(engine)
    out = check_repository_folder(out, overwrite, [engine])
    repository = OutputFolder(out, overwrite, OVERWRITE_FIX)
    try:
        python_models = {
            PREPROCESS: f"{__package__}.triton_models.PreprocessModel",
            POSTPROCESS: f"{__package__}.triton_models.PostprocessModel",
        }
        for config in repository_configs(profile, instances, max_queue_delay_us):
            write_model(repository.path, config, python_models.get(config["name"]))
        atomic_write_bytes(repository.path / ENGINE / VERSION / "model.plan", Path(engine).read_bytes())
        readme = _readme(out.resolve(), spec, profile, instances)
        atomic_write_bytes(repository.path / "README.txt", readme.encode())
    except BaseException:
        repository.discard()
        raise
    return repository.commit()


def build_repository(
    out: str | os.PathLike,
    backbone: str,
    precision: str = "fp16",
    profile: ShapeProfile | None = None,
    checkpoint: str | os.PathLike | None = None,
    *,
    engine_dir: str | os.PathLike | None = None,
    export_dir: str | os.PathLike | None = None,
    calibration: str | os.PathLike | None = None,
    instances: int = 1,
    max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
    overwrite: bool = False,
) -> Path:
    """`write_repository` around the engine of `backbone` (see `engine.pipeline.build`), built with full
    TensorRT for this machine's GPU, or taken from the engine cache."""
    # all checked before a build
    check_repository_folder(out, overwrite, [checkpoint, calibration, engine_dir, export_dir])
    profile = profile or ShapeProfile()
    check_profile(profile)
    _check_options(instances, max_queue_delay_us)
    try:
        import_tensorrt("tensorrt")
    except TensorRTNotInstalled as e:
        raise MissingDependency(f"TensorRT is not installed; {TRITON_TENSORRT}") from e
    engine = build(
        backbone,
        checkpoint,
        profile,
        flavour="tensorrt",
        engine_dir=engine_dir,
        export_dir=export_dir,
        precision=precision,
        calibration=calibration,
    )
    return write_repository(out, engine, instances, max_queue_delay_us, overwrite)
