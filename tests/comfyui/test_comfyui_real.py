"""The pack in a real ComfyUI: installed as ComfyUI-Manager installs it, beside comfyui_controlnet_aux's
opencv-python and onnxruntime-gpu, ComfyUI started, workflows run through its HTTP API.

Needs a ComfyUI checkout: COMFYUI_DIR=/path/to/ComfyUI (the README names the version); it skips
without one (CI has none). ComfyUI's requirements come from $COMFYUI_PYTHON's environment, or a venv
built once (tests/support/comfyui_envs.py). Runs on the CPU with the synthetic vit-small weights. `pytest -s`
prints the environment's OpenCV / ONNX Runtime before and after, and the node timings.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from support import comfyui_envs as envs
from support.reference import REPO_ROOT, load_arrays

COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
pytestmark = pytest.mark.skipif(
    not COMFYUI_DIR, reason="set COMFYUI_DIR to a ComfyUI checkout (0.3.64 or later) to run the pack in it"
)
PACK_NODES = (
    "Metric3D-DepthMapPreprocessor",
    "Metric3D-NormalMapPreprocessor",
    "Metric3D-MetricDepth",
    "Metric3D-SaveMetricDepth",
)
# comfyui_controlnet_aux's INPUT_TYPES() of both preprocessors (node_wrappers/metric3d.py, e8b689a).
ORIGINAL_INPUTS = {
    "required": {"image": ["IMAGE", {}]},
    "optional": {
        "backbone": [["vit-small", "vit-large", "vit-giant2"], {"default": "vit-small"}],
        "fx": ["INT", {"default": 1000, "min": 1, "max": 16384, "step": 1}],
        "fy": ["INT", {"default": 1000, "min": 1, "max": 16384, "step": 1}],
        "resolution": ["INT", {"default": 512, "min": 64, "max": 16384, "step": 64}],
    },
}
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


# A 5-frame MP4 of a moving gradient, written with PyAV (what ComfyUI's video nodes read it with).
WRITE_VIDEO = (
    "import av, numpy as np, sys\n"
    "c = av.open(sys.argv[1], 'w'); s = c.add_stream('mpeg4', rate=8); s.width, s.height = 96, 64\n"
    "for i in range(5):\n"
    "    x = np.linspace(0, 255, 96)[None, :, None] * np.ones((64, 1, 3))\n"
    "    f = np.roll(x, 8 * i, axis=1).astype(np.uint8); f[20:40, 30:60] = 40\n"
    "    [c.mux(p) for p in s.encode(av.VideoFrame.from_ndarray(f, format='rgb24'))]\n"
    "[c.mux(p) for p in s.encode()]; c.close()\n"
)


@pytest.fixture(scope="module")
def comfyui(tmp_path_factory, small_checkpoint, small_onnx):
    """A running ComfyUI with the pack installed Manager-style; yields what the tests need."""
    comfyui_dir = Path(COMFYUI_DIR)
    layers = envs.comfyui_layers(comfyui_dir)
    wheels = envs.wheelhouse(*envs.CONTROLNET_AUX, "opencv-contrib-python")
    root = tmp_path_factory.mktemp("comfyui")
    python = envs.fresh_venv(root / "venv", layers)
    envs.run([python, "-m", "pip", "install", "-q", "--find-links", wheels, *envs.CONTROLNET_AUX])
    before = envs.opencv_and_onnxruntime(python)
    base = root / "base"
    pack = envs.copy_of_the_repository(base / "custom_nodes" / "trt-metric3d")
    commands = envs.manager_install(python, pack)
    after = envs.opencv_and_onnxruntime(python)
    print(
        f"\nComfyUI venv (+ controlnet_aux's packages): before {before}\n  Manager-style {commands}: {after}"
    )
    assert [line.split("==")[0] for line in after] == ["onnxruntime-gpu", "opencv-python"]
    envs.run([python, "-m", "pip", "check"])

    models = base / "models" / "metric3d"
    models.mkdir(parents=True)
    shutil.copy(small_checkpoint, models)
    shutil.copytree(small_onnx[0].parent, models / "onnx")  # ComfyUI's python has no onnx exporter
    (base / "input").mkdir()
    ref, _ = load_arrays("vit-small", "coffee", "model")
    import cv2

    cv2.imwrite(str(base / "input" / "coffee.png"), ref["input_u8"][:, :, ::-1])
    envs.run([python, "-c", WRITE_VIDEO, base / "input" / "clip.mp4"])

    port = _free_port()
    log = open(root / "comfyui.log", "w")
    env = {k: v for k, v in os.environ.items() if not k.startswith("METRIC3D_")}
    env["HF_HUB_OFFLINE"] = "1"
    server = subprocess.Popen(
        [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory", base,
         "--database-url", "sqlite:///:memory:", "--disable-auto-launch"],
        cwd=comfyui_dir, stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if server.poll() is not None:
                pytest.fail(f"ComfyUI exited: {(root / 'comfyui.log').read_text()[-3000:]}")
            try:
                object_info = _get(f"{url}/object_info")
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("ComfyUI did not answer within 5 minutes")
        yield type(
            "ComfyUI", (), dict(url=url, python=python, base=base, log=root / "comfyui.log", info=object_info)
        )
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()


def run_prompts(comfyui, prompts: dict, tmp_path: Path) -> dict:
    (tmp_path / "prompts.json").write_text(json.dumps(prompts))
    client = REPO_ROOT / "tests" / "support" / "comfyui_client.py"
    envs.run([comfyui.python, client, comfyui.url, tmp_path / "prompts.json", tmp_path / "results.json"])
    results = json.loads((tmp_path / "results.json").read_text())
    for name, result in results.items():
        assert result["status"] == "success", f"{name}: {result}\n{comfyui.log.read_text()[-3000:]}"
        print(f"\n{name}: {result['seconds']} s; node seconds {result['node_seconds']}")
    return results


def saved_images(comfyui, outputs: dict, node: str) -> list[np.ndarray]:
    import cv2

    files = [comfyui.base / i["type"] / i["subfolder"] / i["filename"] for i in outputs[node]["images"]]
    return [cv2.imread(str(f), cv2.IMREAD_UNCHANGED)[:, :, ::-1] for f in files]


def original_inputs_of(spec: dict) -> dict:
    """/object_info's inputs written as the original V1 node's INPUT_TYPES (V3 gives combos as
    ["COMBO", {"options": [...]}] and adds optional / tooltip keys: the same to the frontend)."""

    def plain(entry):
        kind, options = entry[0], dict(entry[1]) if len(entry) > 1 else {}
        if kind == "COMBO":
            kind = options.pop("options")
        return [kind, {k: v for k, v in options.items() if k in ("default", "min", "max", "step")}]

    return {
        group: {name: plain(spec["input"][group][name]) for name in list(ORIGINAL_INPUTS[group])}
        for group in ORIGINAL_INPUTS
    }


def test_nodes_keep_the_original_contract(comfyui):
    for node in PACK_NODES:
        assert node in comfyui.info, node
    for node, name in (("Metric3D-DepthMapPreprocessor", "Metric3D Depth Map"),
                       ("Metric3D-NormalMapPreprocessor", "Metric3D Normal Map")):  # fmt: skip
        spec = comfyui.info[node]
        assert spec["display_name"] == name and spec["output"] == ["IMAGE"]
        assert spec["category"] == "ControlNet Preprocessors/Normal and Depth Estimators"
        assert original_inputs_of(spec) == ORIGINAL_INPUTS
        optional = spec["input_order"]["optional"]
        assert optional == [*ORIGINAL_INPUTS["optional"], "backend", "precision"]
    assert comfyui.info["Metric3D-MetricDepth"]["output_name"] == ["depth_metres", "normal_map"]
    log = comfyui.log.read_text()
    assert "trt-metric3d" in log and "IMPORT FAILED" not in log, log[-3000:]


def original_prompt(backend: str | None = None) -> dict:
    """An API-format workflow as saved with comfyui_controlnet_aux's nodes (their inputs only)."""
    extra = {"backend": backend} if backend else {}
    widgets = {"backbone": "vit-small", "fx": 1000, "fy": 1000, "resolution": 512, **extra}
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "coffee.png"}},
        "2": {"class_type": "Metric3D-DepthMapPreprocessor", "inputs": {"image": ["1", 0], **widgets}},
        "3": {"class_type": "Metric3D-NormalMapPreprocessor", "inputs": {"image": ["1", 0], **widgets}},
        "4": {
            "class_type": "SaveImage",
            "inputs": {"images": ["2", 0], "filename_prefix": f"depth{backend}"},
        },
        "5": {
            "class_type": "SaveImage",
            "inputs": {"images": ["3", 0], "filename_prefix": f"normal{backend}"},
        },
    }


def test_saved_workflow_gives_the_original_node_images(comfyui, tmp_path):
    """The original's API-format workflow runs unchanged; PyTorch and ONNX Runtime (controlnet_aux's
    onnxruntime-gpu, its CPU provider) give the original's images within one grey level."""
    node_ref, _ = load_arrays("vit-small", "coffee", "node")
    results = run_prompts(
        comfyui, {"torch": original_prompt(), "onnxruntime": original_prompt("onnxruntime")}, tmp_path
    )
    for backend, result in results.items():
        (depth,) = saved_images(comfyui, result["outputs"], "4")
        (normal,) = saved_images(comfyui, result["outputs"], "5")
        for ours, expected in ((depth, node_ref["node_depth_u8"]), (normal, node_ref["node_normal_u8"])):
            diff = np.abs(ours.astype(np.int16) - expected.astype(np.int16))
            assert ours.shape == expected.shape and diff.max() <= 1, (backend, int(diff.max()))
    log = comfyui.log.read_text()
    assert "Metric3D nodes: vit-small on onnxruntime, fp32, cpu, running" in log, log[-3000:]
    assert "Metric3D nodes: vit-small on torch, fp32, cpu, running" in log


def to_api(workflow: dict, object_info: dict) -> dict:
    """A UI-format workflow as the frontend queues it: widget values by position onto the node's
    widget inputs (a seed's control_after_generate value skipped), links onto linked inputs."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] not in object_info:  # notes: frontend-only
            continue
        info = object_info[node["type"]]
        specs = {**info["input"]["required"], **info["input"].get("optional", {})}
        order = info["input_order"]["required"] + info["input_order"].get("optional", [])
        linked = {i["name"]: links[i["link"]] for i in node["inputs"] if i.get("link") is not None}
        values, inputs = iter(node["widgets_values"]), {}
        for name in order:
            kind, options = specs[name][0], (specs[name][1] if len(specs[name]) > 1 else {})
            if isinstance(kind, list) or kind in WIDGET_TYPES and not options.get("forceInput"):
                value = next(values, None)
                if options.get("control_after_generate"):
                    next(values, None)
                if value is not None:
                    inputs[name] = value
            if name in linked:
                inputs[name] = [str(linked[name][1]), linked[name][2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def without_missing_models(prompt: dict, object_info: dict) -> dict:
    """The workflow less the nodes that name a file this ComfyUI lacks (a checkpoint, a ControlNet:
    a combo value not among its options) and what they feed: for the ControlNet workflow, the part
    up to the preprocessor's output."""

    def lacks_a_file(node: dict) -> bool:
        info = object_info[node["class_type"]]["input"]
        specs = {**info["required"], **info.get("optional", {})}
        for name, value in node["inputs"].items():
            kind, options = specs[name][0], (specs[name][1] if len(specs[name]) > 1 else {})
            choices = kind if isinstance(kind, list) else options.get("options") if kind == "COMBO" else None
            if choices is not None and not isinstance(value, list) and value not in choices:
                return True
        return False

    dropped = {key for key, node in prompt.items() if lacks_a_file(node)}
    while True:
        fed = {
            key
            for key, node in prompt.items()
            if any(isinstance(v, list) and v[0] in dropped for v in node["inputs"].values())
        }
        if fed <= dropped:
            return {key: node for key, node in prompt.items() if key not in dropped}
        dropped |= fed


def check_links(workflow: dict, object_info: dict) -> None:
    """Every link joins an output and an input of the same type, as the node definitions say."""
    nodes = {n["id"]: n for n in workflow["nodes"]}
    for _, src, slot, dst, dst_slot, kind in workflow["links"]:
        source, target = object_info[nodes[src]["type"]], object_info[nodes[dst]["type"]]
        name = nodes[dst]["inputs"][dst_slot]["name"]
        spec = {**target["input"]["required"], **target["input"].get("optional", {})}[name]
        assert source["output"][slot] == kind == spec[0], (nodes[src]["type"], slot, nodes[dst]["type"], name)


def test_example_workflows_run(comfyui, tmp_path):
    # ComfyUI lists a pack's example_workflows/ in its template browser, and serves them from there.
    listed = _get(f"{comfyui.url}/workflow_templates")
    names = sorted(path.stem for path in (REPO_ROOT / "example_workflows").glob("*.json"))
    assert len(names) == 3 and sorted(listed["trt-metric3d"]) == names, listed
    workflows = {n: _get(f"{comfyui.url}/api/workflow_templates/trt-metric3d/{n}.json") for n in names}
    prompts = {}
    for name, workflow in workflows.items():
        check_links(workflow, comfyui.info)
        for node in workflow["nodes"]:  # the user's own files here
            if node["type"] in ("LoadImage", "LoadVideo"):
                node["widgets_values"][0] = "coffee.png" if node["type"] == "LoadImage" else "clip.mp4"
        prompts[name] = without_missing_models(to_api(workflow, comfyui.info), comfyui.info)
    assert "KSampler" not in json.dumps(prompts["metric3d_depth_for_controlnet"])
    results = run_prompts(comfyui, prompts, tmp_path)

    (depth,) = saved_images(comfyui, results["metric3d_depth_for_controlnet"]["outputs"], "3")
    node_ref, _ = load_arrays("vit-small", "coffee", "node")
    assert np.abs(depth.astype(np.int16) - node_ref["node_depth_u8"]).max() <= 1
    metric = results["metric3d_metric_depth_and_normals"]["outputs"]
    (preview,) = metric["3"]["images"]
    saved = comfyui.base / "output" / preview["subfolder"]
    stem = preview["filename"].removesuffix("_depth_preview.png")
    metres = np.load(saved / f"{stem}_depth.npy")
    assert metres.shape == (400, 600) and metres.min() > 0
    (normal,) = saved_images(comfyui, metric, "4")
    assert normal.shape == (400, 600, 3)
    (video,) = results["metric3d_video_depth"]["outputs"]["5"]["images"]
    assert (comfyui.base / "output" / video["subfolder"] / video["filename"]).stat().st_size > 0


def test_saved_ui_workflow_of_the_original_runs(comfyui, tmp_path):
    """A UI-format workflow saved with controlnet_aux's node: four widget values, no backend."""
    workflow = json.loads(
        (REPO_ROOT / "example_workflows" / "metric3d_depth_for_controlnet.json").read_text()
    )
    for node in workflow["nodes"]:
        if node["type"] == "Metric3D-DepthMapPreprocessor":
            node["widgets_values"] = ["vit-small", 1000, 1000, 256]
        if node["type"] == "LoadImage":
            node["widgets_values"][0] = "coffee.png"
    prompt = without_missing_models(to_api(workflow, comfyui.info), comfyui.info)
    (result,) = run_prompts(comfyui, {"original UI workflow": prompt}, tmp_path).values()
    (depth,) = saved_images(comfyui, result["outputs"], "3")
    assert min(depth.shape[:2]) == 256
