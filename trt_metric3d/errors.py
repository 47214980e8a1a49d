"""The package's error types: each message names the problem and the fix.

Every error a user can cause (bad input, a missing file or extra, a folder that cannot be written)
is a `Metric3DError`, so the CLI and the ComfyUI nodes report it in one line. The second base class
keeps the usual Python meaning, so `except ValueError` / `except ImportError` still catch them.
"""

from __future__ import annotations


class Metric3DError(Exception):
    """A problem the user can fix; the message says how."""


class InputError(Metric3DError, ValueError):
    """A bad argument: image, focal length, device, shape, option value."""


class MissingDependency(Metric3DError, ImportError):
    """An optional extra that this step needs is not installed; the message gives the pip command."""


class BackendUnavailable(Metric3DError, RuntimeError):
    """A backend is installed but cannot run here (no GPU, no CUDA provider, an engine that fails)."""


class WorkspaceError(Metric3DError, OSError):
    """A folder to write to (results, ONNX, engines) is missing, not a folder, or not writable."""
