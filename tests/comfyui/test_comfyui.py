"""The repository as a ComfyUI custom node pack, loaded the way ComfyUI loads one, on CPU (with
stand-ins for ComfyUI's modules; tests/comfyui/test_comfyui_real.py runs it in a real ComfyUI)."""

import asyncio
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from support import comfy_api_stand_in
from support.reference import REPO_ROOT, load_arrays
from support.stand_in_backends import StandInNetwork, load_stand_in_networks

# comfyui_controlnet_aux's INPUT_TYPES()["optional"] for both preprocessors (image is required).
ORIGINAL_OPTIONAL_INPUTS = {
    "backbone": (["vit-small", "vit-large", "vit-giant2"], {"default": "vit-small"}),
    "fx": ("INT", {"default": 1000, "min": 1, "max": 16384, "step": 1}),
    "fy": ("INT", {"default": 1000, "min": 1, "max": 16384, "step": 1}),
    "resolution": ("INT", {"default": 512, "min": 64, "max": 16384, "step": 64}),
}


def as_v1(spec) -> tuple:
    """A stand-in schema input written as a V1 INPUT_TYPES entry."""
    limits = {k: getattr(spec, k) for k in ("default", "min", "max", "step") if getattr(spec, k) is not None}
    return (spec.options, limits) if spec.kind == "COMBO" else (spec.kind, limits)


def load_pack(name: str) -> dict[str, type]:
    """Import <repo>/__init__.py as a package, as ComfyUI's custom-node loader does, and ask its V3
    entry point for the nodes: {node ID: node class}."""
    spec = importlib.util.spec_from_file_location(
        name, REPO_ROOT / "__init__.py", submodule_search_locations=[str(REPO_ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    assert not hasattr(module, "NODE_CLASS_MAPPINGS"), "ComfyUI would load V1 mappings, not V3"
    extension = asyncio.run(module.comfy_entrypoint())
    return {node.define_schema().node_id: node for node in asyncio.run(extension.get_node_list())}


def run(node: type, *args, **kwargs) -> tuple:
    """What ComfyUI does with a V3 node: call its execute classmethod, take the outputs."""
    return node.execute(*args, **kwargs).args


@pytest.fixture(scope="module")
def pack(small_checkpoint):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("METRIC3D_CHECKPOINT_DIR", str(small_checkpoint.parent))
        comfy_api_stand_in.install(mp)
        yield load_pack("trt_metric3d_custom_nodes")


@pytest.fixture(scope="module")
def stand_in_pack(small_checkpoint):
    """The pack again, as its own package, its network a stand-in: for the plumbing tests."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("METRIC3D_CHECKPOINT_DIR", str(small_checkpoint.parent))
        comfy_api_stand_in.install(mp)
        pack = load_pack("trt_metric3d_stand_in_nodes")
        load_stand_in_networks(mp, sys.modules["trt_metric3d_stand_in_nodes.trt_metric3d.checkpoint"])
        yield pack


@pytest.fixture(scope="module")
def coffee_image():
    ref, _ = load_arrays("vit-small", "coffee", "model")
    return ref["input_u8"], torch.from_numpy(ref["input_u8"].astype(np.float32) / 255.0)[None]


def test_node_ids_and_names_are_the_originals_and_ours(pack):
    names = {node_id: node.define_schema().display_name for node_id, node in pack.items()}
    assert names == {
        "Metric3D-DepthMapPreprocessor": "Metric3D Depth Map",
        "Metric3D-NormalMapPreprocessor": "Metric3D Normal Map",
        "Metric3D-MetricDepth": "Metric3D Metric Depth",
        "Metric3D-SaveMetricDepth": "Metric3D Save Metric Depth",
    }


@pytest.mark.parametrize("node_id", ["Metric3D-DepthMapPreprocessor", "Metric3D-NormalMapPreprocessor"])
def test_inputs_are_the_originals_then_ours(pack, node_id):
    schema = pack[node_id].define_schema()
    image, *optional = schema.inputs
    assert (image.id, image.kind, image.optional) == ("image", "IMAGE", False)
    assert all(spec.optional for spec in optional)
    originals = optional[: len(ORIGINAL_OPTIONAL_INPUTS)]
    assert {spec.id: as_v1(spec) for spec in originals} == ORIGINAL_OPTIONAL_INPUTS
    assert [spec.id for spec in originals] == list(ORIGINAL_OPTIONAL_INPUTS)
    assert [spec.id for spec in optional[len(ORIGINAL_OPTIONAL_INPUTS) :]] == ["backend", "precision"]
    assert [output.kind for output in schema.outputs] == ["IMAGE"]
    assert schema.category == "ControlNet Preprocessors/Normal and Depth Estimators"


@pytest.mark.parametrize(
    ("node_id", "reference"),
    [
        ("Metric3D-DepthMapPreprocessor", "node_depth_u8"),
        ("Metric3D-NormalMapPreprocessor", "node_normal_u8"),
    ],
)
def test_nodes_match_the_original_nodes(pack, coffee_image, node_id, reference):
    node_ref, _ = load_arrays("vit-small", "coffee", "node")
    # A saved workflow's widget values, as the original node received them.
    (out,) = run(pack[node_id], coffee_image[1], backbone="vit-small", fx=1000, fy=1000, resolution=512)
    expected = node_ref[reference]
    assert out.shape == (1, *expected.shape) and out.dtype == torch.float32
    diff = np.abs(np.rint(out[0].numpy() * 255).astype(np.int16) - expected.astype(np.int16))
    assert diff.max() <= 1, f"{np.count_nonzero(diff)} values differ"


def test_model_is_loaded_once_and_batches_run(stand_in_pack, coffee_image, monkeypatch):
    nodes = sys.modules["trt_metric3d_stand_in_nodes.trt_metric3d.comfyui.nodes"]
    nodes.managed_model("vit-small")  # first use loads it
    loads = []
    monkeypatch.setattr(nodes, "load_managed", lambda backbone: loads.append(backbone))
    small = torch.from_numpy(np.ascontiguousarray(coffee_image[0][::4, ::4]).astype(np.float32) / 255.0)
    batch = torch.stack([small, small.flip(1)])
    (out,) = run(stand_in_pack["Metric3D-DepthMapPreprocessor"], batch, resolution=64)
    assert out.shape[0] == 2 and min(out.shape[1:3]) == 64
    assert not torch.equal(out[0], out[1])
    assert loads == [], "the cached model was loaded again"


def test_onnxruntime_backend_gives_the_original_node_images(
    pack, coffee_image, small_onnx, monkeypatch, caplog
):
    monkeypatch.setenv("METRIC3D_EXPORT_DIR", str(small_onnx[0].parent))  # the session's export
    node_ref, _ = load_arrays("vit-small", "coffee", "node")
    with caplog.at_level("INFO", logger="trt_metric3d"):
        (out,) = run(pack["Metric3D-DepthMapPreprocessor"], coffee_image[1], backend="onnxruntime")
        run(pack["Metric3D-NormalMapPreprocessor"], coffee_image[1], resolution=64, backend="onnxruntime")
    diff = np.abs(np.rint(out[0].numpy() * 255).astype(np.int16) - node_ref["node_depth_u8"])
    assert diff.max() <= 1, f"{np.count_nonzero(diff)} values differ"
    nodes = sys.modules["trt_metric3d_custom_nodes.trt_metric3d.comfyui.nodes"]
    assert [r.runtime.backend for r in nodes._accelerated.values() if r is not None] == ["onnxruntime"]
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Metric3D nodes:")]
    assert said == [f"Metric3D nodes: vit-small on onnxruntime, fp32, cpu, running {small_onnx[0]}"], said


def test_pytorch_runtime_says_what_it_runs_once(stand_in_pack, small_checkpoint, caplog):
    nodes = sys.modules["trt_metric3d_stand_in_nodes.trt_metric3d.comfyui.nodes"]
    nodes._on_managed_model.clear()
    with caplog.at_level("INFO", logger="trt_metric3d"):
        for _ in range(2):
            run(
                stand_in_pack["Metric3D-DepthMapPreprocessor"],
                torch.rand(1, 56, 84, 3),
                resolution=64,
                backend="torch",
            )
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Metric3D nodes:")]
    assert said == [f"Metric3D nodes: vit-small on torch, fp32, cpu, running {small_checkpoint}"]


def test_unavailable_tensorrt_falls_back_to_pytorch_and_says_so_once(stand_in_pack, caplog):
    """On this CPU machine TensorRT cannot run (no GPU; maybe not installed): same images, one warning."""
    node = stand_in_pack["Metric3D-DepthMapPreprocessor"]
    image = torch.rand(1, 56, 84, 3)
    with caplog.at_level("WARNING", logger="trt_metric3d"):
        outs = [run(node, image, resolution=64, backend="tensorrt")[0] for _ in range(2)]
    (expected,) = run(node, image, resolution=64, backend="torch")
    assert all(torch.equal(out, expected) for out in outs)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "tensorrt backend could not be opened" in warnings[0], warnings
    assert "fall back to PyTorch" in warnings[0]
    assert "CUDA GPU" in warnings[0], "the reason given is the real one (no GPU here)"


def test_metric_depth_node_applies_fx_fy(stand_in_pack, coffee_image):
    node = stand_in_pack["Metric3D-MetricDepth"]
    outputs = node.define_schema().outputs
    assert [(o.kind, o.display_name) for o in outputs] == [("MASK", "depth_metres"), ("IMAGE", "normal_map")]
    depth_a, normal = run(node, coffee_image[1], backbone="vit-small", fx=500.0, fy=700.0)
    depth_b, _ = run(node, coffee_image[1], backbone="vit-small", fx=1000.0, fy=1000.0)
    assert depth_a.shape == (1, 400, 600) and normal.shape == (1, 400, 600, 3)
    assert 0 <= normal.min() and normal.max() <= 1
    torch.testing.assert_close(depth_a * 1000 / 600, depth_b, rtol=1e-5, atol=0)
    # metres = canonical * focal * r / 1000, r = 616 / 400 for this image
    assert depth_b.min() > 0.1 * 1.54 * 0.99


@pytest.fixture
def comfyui(small_checkpoint, tmp_path, monkeypatch):
    """Stand-ins for folder_paths, comfy.model_management, comfy.model_patcher and comfy.utils that
    record what the pack asks of them; the network a stand-in too."""
    models_dir = tmp_path / "models"
    (models_dir / "metric3d").mkdir(parents=True)
    (models_dir / "metric3d" / small_checkpoint.name).symlink_to(small_checkpoint)
    seen = types.SimpleNamespace(models_dir=models_dir, registered={}, loaded=[], progress=[])

    folder_paths = types.ModuleType("folder_paths")
    folder_paths.models_dir = str(models_dir)
    folder_paths.add_model_folder_path = lambda name, path, is_default=False: seen.registered.setdefault(
        name, path
    )
    folder_paths.get_folder_paths = lambda name: [seen.registered[name]] if name in seen.registered else []
    folder_paths.get_output_directory = lambda: str(tmp_path / "output")
    folder_paths.get_save_image_path = lambda prefix, output_dir, width, height: (
        f"{output_dir}/{prefix.rpartition('/')[0]}",
        prefix.rpartition("/")[2],
        7,  # ComfyUI's next free counter for this prefix
        prefix.rpartition("/")[0],
        prefix,
    )
    folder_paths.get_full_path = lambda name, file: (
        str(p) if name in seen.registered and (p := models_dir / name / file).is_file() else None
    )

    class ModelPatcher:
        def __init__(self, model, load_device, offload_device, size=0):
            self.model, self.load_device, self.size, self.callbacks = model, load_device, size, {}

        def add_callback(self, call_type, callback):
            self.callbacks.setdefault(call_type, []).append(callback)

        def detach(self, unpatch_all=True):  # what ComfyUI does to unload a model
            for callback in self.callbacks.get("on_detach_after", []):
                callback(self, unpatch_all)

    class ProgressBar:
        def __init__(self, total):
            seen.progress.append(("new", total))

        def update(self, n):
            seen.progress.append(("update", n))

        def update_absolute(self, value, total=None):
            seen.progress.append(("absolute", value, total))

    comfy = types.ModuleType("comfy")
    management = types.ModuleType("comfy.model_management")
    management.get_torch_device = lambda: torch.device("cpu")
    management.unet_offload_device = lambda: torch.device("cpu")
    management.load_models_gpu = lambda models, **kw: seen.loaded.append((models, kw))
    patcher = types.ModuleType("comfy.model_patcher")
    patcher.ModelPatcher = ModelPatcher
    utils = types.ModuleType("comfy.utils")
    utils.ProgressBar = ProgressBar
    extension = types.ModuleType("comfy.patcher_extension")
    extension.CallbacksMP = types.SimpleNamespace(ON_DETACH="on_detach_after")
    stand_ins = {
        "folder_paths": folder_paths,
        "comfy": comfy,
        "comfy.model_management": management,
        "comfy.model_patcher": patcher,
        "comfy.utils": utils,
        "comfy.patcher_extension": extension,
    }
    for name, module in stand_ins.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delenv("METRIC3D_CHECKPOINT_DIR", raising=False)
    for name in [m for m in sys.modules if m.startswith("trt_metric3d_in_comfyui")]:
        monkeypatch.delitem(sys.modules, name)  # a fresh pack binds these stand-ins
    seen.ModelPatcher = ModelPatcher
    comfy_api_stand_in.install(monkeypatch)
    seen.pack = load_pack("trt_metric3d_in_comfyui")
    load_stand_in_networks(monkeypatch, sys.modules["trt_metric3d_in_comfyui.trt_metric3d.checkpoint"])
    return seen


def test_pack_uses_comfyui_services_when_present(comfyui):
    image = torch.rand(1, 56, 84, 3)
    (out,) = run(comfyui.pack["Metric3D-NormalMapPreprocessor"], image, resolution=64)
    assert out.shape == (1, 64, 96, 3)
    assert comfyui.registered == {"metric3d": str(comfyui.models_dir / "metric3d")}
    assert len(comfyui.loaded) == 1 and comfyui.loaded[0][1] == {"force_full_load": True}
    assert isinstance(comfyui.loaded[0][0][0], comfyui.ModelPatcher)
    assert comfyui.progress == [("new", 1), ("update", 1)]


def test_save_metric_depth_writes_metres_millimetres_and_a_preview(comfyui, tmp_path):
    import cv2

    depth = torch.tensor([[[0.5, 1.25], [70.0, 2.0]], [[3.0, 3.0], [4.0, 4.5]]])
    (tmp_path / "output" / "scans").mkdir(parents=True)  # ComfyUI makes the subfolder
    out = comfyui.pack["Metric3D-SaveMetricDepth"].execute(depth, filename_prefix="scans/room")
    assert [dict(r) for r in out.ui.results] == [
        {"filename": f"room_{n:05}_depth_preview.png", "subfolder": "scans", "type": "output"} for n in (7, 8)
    ]
    folder = tmp_path / "output" / "scans"
    np.testing.assert_array_equal(np.load(folder / "room_00007_depth.npy"), depth[0].numpy())
    millimetres = cv2.imread(str(folder / "room_00007_depth.png"), cv2.IMREAD_UNCHANGED)
    assert millimetres.dtype == np.uint16 and millimetres.tolist() == [[500, 1250], [65535, 2000]]
    assert cv2.imread(str(folder / "room_00008_depth_preview.png")).shape == (2, 2, 3)


def test_engine_is_built_on_first_use_with_a_progress_bar(comfyui, monkeypatch):
    """The TensorRT runtime is opened once, its engine cached in models/tensorrt/metric3d (ONNX in
    models/metric3d/onnx), and the build's phases drive a ComfyUI progress bar. (Building needs
    TensorRT and a GPU: the runtime is a stand-in that reports build progress as the real builder
    does.)"""
    nodes = sys.modules["trt_metric3d_in_comfyui.trt_metric3d.comfyui.nodes"]
    opened = []

    def tensorrt_runtime(settings, build_progress):
        opened.append(settings)
        for fraction in (0.0, 0.5, 1.0):
            build_progress("Building engine", fraction)
        return nodes.Metric3D(model=StandInNetwork(), device="cpu")

    monkeypatch.setattr(nodes.Metric3D, "from_settings", tensorrt_runtime)
    monkeypatch.setattr(nodes, "runtime_file", lambda settings: Path(settings.engine_dir) / "x.engine")
    monkeypatch.setattr(nodes, "torch_device", lambda: torch.device("cuda"))
    node = comfyui.pack["Metric3D-DepthMapPreprocessor"]
    for _ in range(2):
        run(node, torch.rand(1, 56, 84, 3), resolution=64)
    expected = nodes.RuntimeSettings(
        "vit-small",
        "tensorrt",
        "fp16",
        "cuda",
        comfyui.models_dir / "metric3d" / "metric_depth_vit_small_800k.pth",
        engine_dir=comfyui.models_dir / "tensorrt" / "metric3d",
        export_dir=comfyui.models_dir / "metric3d" / "onnx",
    )
    assert opened == [expected], "opened once, fp16"
    build = [event for event in comfyui.progress if event[0] == "absolute"]
    assert build == [("absolute", 0, 100), ("absolute", 50, 100), ("absolute", 100, 100)]
    patchers = {id(models[0]): models[0] for models, _ in comfyui.loaded}
    assert len(comfyui.loaded) == 2 and len(patchers) == 1, "one managed runtime, readied per run"
    (patcher,) = patchers.values()
    assert not list(patcher.model.parameters()) and patcher.size >= 1, "not the PyTorch model"

    # ComfyUI unloads it (to make room, or "free model cache"): the runtime is closed, and the next
    # run opens it again.
    runtime = nodes._accelerated[("vit-small", "tensorrt", "fp16", "cuda")].runtime
    patcher.detach()
    with pytest.raises(RuntimeError, match="closed"):
        runtime.predict(np.zeros((8, 8, 3), np.uint8), fx=100.0)
    run(node, torch.rand(1, 56, 84, 3), resolution=64)
    assert len(opened) == 2


def test_detector_has_controlnet_aux_contract(pack, small_checkpoint, coffee_image):
    from PIL import Image

    detector_module = importlib.import_module("trt_metric3d_custom_nodes.trt_metric3d.comfyui.detector")
    detector = detector_module.Metric3DDetector.from_pretrained(
        str(small_checkpoint.parent), filename="metric_depth_vit_small_800k.pth"
    ).to("cpu")
    node_ref, _ = load_arrays("vit-small", "coffee", "node")
    depth, normal = detector(coffee_image[0], detect_resolution=512, fx=1000, fy=1000)
    for ours, expected in ((depth, node_ref["node_depth_u8"]), (normal, node_ref["node_normal_u8"])):
        assert np.abs(ours.astype(np.int16) - expected.astype(np.int16)).max() <= 1
    plumbing = detector_module.Metric3DDetector(StandInNetwork())  # PIL in and out: no real forward needed
    only_depth = plumbing(Image.fromarray(coffee_image[0]), detect_resolution=256, depth_and_normal=False)
    assert isinstance(only_depth, Image.Image) and min(only_depth.size) == 256
    with pytest.raises(ValueError, match="not a Metric3D checkpoint name"):
        detector_module.Metric3DDetector.from_pretrained(filename="model.safetensors")


def test_pyproject_has_a_valid_comfy_registry_section():
    """The fields ComfyUI's / comfy-cli's registry parser reads (comfy_config/types.py), well formed."""
    import re

    import tomllib
    from packaging.specifiers import SpecifierSet

    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    project, comfy = config["project"], config["tool"]["comfy"]
    assert re.fullmatch(r"[A-Za-z](?:[A-Za-z0-9]|[-_.](?=[A-Za-z0-9]))*", project["name"])
    assert "comfyui" not in project["name"].lower() and len(project["name"]) < 100
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    assert project["urls"]["Repository"].startswith("https://github.com/")
    known = {
        "PublisherId",
        "DisplayName",
        "Icon",
        "Models",
        "includes",
        "web",
        "banner_url",
        "requires-comfyui",
    }
    assert set(comfy) <= known and {"PublisherId", "DisplayName"} <= set(comfy)
    assert re.fullmatch(r"[a-z][a-z0-9-]*", comfy["PublisherId"])
    SpecifierSet(comfy["requires-comfyui"])  # raises on a malformed requirement
    os_classifiers = [c for c in project["classifiers"] if c.startswith("Operating System :: ")]
    gpu_classifiers = [c for c in project["classifiers"] if c.startswith("Environment :: ")]
    assert os_classifiers == ["Operating System :: OS Independent"]
    assert gpu_classifiers == ["Environment :: GPU :: NVIDIA CUDA"]
