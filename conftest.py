"""pytest set-up for the repository root.

The root `__init__.py` is ComfyUI's entry point (a clone in custom_nodes/ is imported as a package).
pytest would collect the root as a test package and import that file on its own, which fails in a
clone whose folder name is not a Python identifier (`trt-metric3d`). The root is collected as a
plain folder instead. The hook must be a plugin, not a hook of this file: pytest asks the root's
parent folder's hooks how to collect the root, and this file's hooks apply only below it.
"""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent


class RootAsFolder:
    @pytest.hookimpl(tryfirst=True)
    def pytest_collect_directory(self, path: Path, parent: pytest.Collector) -> pytest.Collector | None:
        return pytest.Dir.from_parent(parent, path=path) if path == ROOT else None


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(RootAsFolder(), "trt-metric3d-root-as-folder")
