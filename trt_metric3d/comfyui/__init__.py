"""ComfyUI node pack: `extension` (the V3 nodes, loaded through the repository root's `__init__.py`),
`nodes` (what they do), `host` (what they use of ComfyUI), `detector` (controlnet_aux's class)."""
