"""Helpers of the test suite: reference data, stand-in backends and ComfyUI modules, the
environments the install and serving tests build, and clients they run. tests/ is on sys.path
(pyproject.toml: pythonpath), so tests import them as `support.<module>`."""
