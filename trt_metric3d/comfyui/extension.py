"""The nodes in ComfyUI's V3 schema (`comfy_api.latest`), loaded through the root's `comfy_entrypoint`.

The two preprocessor nodes keep comfyui_controlnet_aux's node IDs, inputs (same names, order,
defaults and limits, `image` required, the rest optional) and outputs, so saved workflows, API and UI
format, run unchanged; `backend` and `precision` come after the original inputs. Imported only
inside ComfyUI (0.3.64 and later have this API); what the nodes do lives in `nodes.py`.
"""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io, ui

from ..model import BACKBONES
from . import nodes


def _runtime_inputs() -> list:
    return [
        io.Combo.Input("backend", options=list(nodes.BACKENDS), default="auto", optional=True),
        io.Combo.Input("precision", options=list(nodes.PRECISIONS), default="auto", optional=True),
    ]


def _backbone_input(optional: bool) -> io.Combo.Input:
    return io.Combo.Input("backbone", options=list(BACKBONES), default="vit-small", optional=optional)


def _preprocessor_schema(node_id: str, display_name: str) -> io.Schema:
    """The original node's inputs, in their order, then ours."""
    pixels = {"min": 1, "max": nodes.MAX_RESOLUTION, "step": 1, "optional": True}
    return io.Schema(
        node_id=node_id,
        display_name=display_name,
        category=nodes.CATEGORY,
        inputs=[
            io.Image.Input("image"),
            _backbone_input(optional=True),
            io.Int.Input("fx", default=1000, **pixels),
            io.Int.Input("fy", default=1000, **pixels),
            io.Int.Input("resolution", default=512, min=64, max=nodes.MAX_RESOLUTION, step=64, optional=True),
            *_runtime_inputs(),
        ],
        outputs=[io.Image.Output()],
    )


class _ControlNetMap(io.ComfyNode):
    """The original preprocessor node: one of the two node images (OUTPUT: 0 depth, 1 normal)."""

    NODE_ID = DISPLAY_NAME = ""
    OUTPUT = 0

    @classmethod
    def define_schema(cls) -> io.Schema:
        return _preprocessor_schema(cls.NODE_ID, cls.DISPLAY_NAME)

    @classmethod
    def execute(
        cls, image, backbone="vit-small", fx=1000, fy=1000, resolution=512, backend="auto", precision="auto"
    ) -> io.NodeOutput:
        # fx, fy are accepted for workflow compatibility; the original's images do not depend on them.
        maps = nodes.controlnet_maps(image, cls.OUTPUT, backbone, resolution, backend, precision)
        return io.NodeOutput(maps)


class DepthMapPreprocessor(_ControlNetMap):
    NODE_ID, DISPLAY_NAME, OUTPUT = "Metric3D-DepthMapPreprocessor", "Metric3D Depth Map", 0


class NormalMapPreprocessor(_ControlNetMap):
    NODE_ID, DISPLAY_NAME, OUTPUT = "Metric3D-NormalMapPreprocessor", "Metric3D Normal Map", 1


class MetricDepth(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        focal = {"default": 1000.0, "min": 1.0, "max": nodes.MAX_RESOLUTION, "step": 0.1}
        return io.Schema(
            node_id="Metric3D-MetricDepth",
            display_name="Metric3D Metric Depth",
            category=nodes.CATEGORY,
            description=(
                "Metric depth in metres (not 0..1: viewed as an image it is white beyond 1 m; save it "
                "with Metric3D Save Metric Depth) and the surface-normal map. fx, fy: the image's "
                "focal lengths in pixels."
            ),
            inputs=[
                io.Image.Input("image"),
                _backbone_input(optional=False),
                io.Float.Input("fx", **focal),
                io.Float.Input("fy", **focal),
                *_runtime_inputs(),
            ],
            outputs=[
                io.Mask.Output("depth_metres", display_name="depth_metres"),
                io.Image.Output("normal_map", display_name="normal_map"),
            ],
        )

    @classmethod
    def execute(
        cls, image, backbone="vit-small", fx=1000.0, fy=1000.0, backend="auto", precision="auto"
    ) -> io.NodeOutput:
        return io.NodeOutput(*nodes.metric_depth(image, backbone, fx, fy, backend, precision))


class SaveMetricDepth(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Metric3D-SaveMetricDepth",
            display_name="Metric3D Save Metric Depth",
            category=nodes.CATEGORY,
            description=(
                "Saves each frame's depth in metres to the output folder: _depth.npy (float32 metres), "
                "_depth.png (16-bit millimetres) and _depth_preview.png (colours: near warm, far cool)."
            ),
            inputs=[
                io.Mask.Input("depth_metres"),
                io.String.Input("filename_prefix", default="Metric3D/depth"),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, depth_metres, filename_prefix="Metric3D/depth") -> io.NodeOutput:
        previews = nodes.save_metric_depth(depth_metres, filename_prefix)
        saved = [ui.SavedResult(name, subfolder, io.FolderType.output) for name, subfolder in previews]
        return io.NodeOutput(ui=ui.SavedImages(saved))


class Metric3DExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [DepthMapPreprocessor, NormalMapPreprocessor, MetricDepth, SaveMetricDepth]


async def comfy_entrypoint() -> Metric3DExtension:
    return Metric3DExtension()
