"""The serving tests (`test_serve.py`, `test_triton_repo.py`) in a Python that has PyTriton.

The test environment cannot hold PyTriton (numpy < 2) beside OpenCV 4.12 (numpy >= 2, needed for the
bit-exact reference tests), so where PyTriton is missing here those files skip their server tests,
and this test runs them again in the side environment of `serve_env`, the one `pip install
"trt-metric3d[serve]"` gives a user.
"""

import importlib.util
import os
import re
import subprocess

import pytest

from support.reference import REPO_ROOT
from support.serve_env import serve_python

pytestmark = pytest.mark.environments  # its own step of .ci/run: it installs a side environment
SERVING_TESTS = ("tests/serving/test_serve.py", "tests/serving/test_triton_repo.py")


def test_serving_tests_pass_where_pytriton_is_installed():
    if importlib.util.find_spec("pytriton") is not None:
        pytest.skip("PyTriton is installed in this environment: the serving tests ran here directly")
    python = serve_python()
    command = [str(python), "-m", "pytest", *SERVING_TESTS, "-q", "-rs", "-p", "no:cacheprovider"]
    result = subprocess.run(command, cwd=REPO_ROOT, env=dict(os.environ), capture_output=True, text=True)
    report = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, f"the serving tests failed under {python}:\n{report}"
    summary = result.stdout.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) > 0, report
    if "skipped" in summary:  # e.g. a machine where tritonserver cannot start: say why, as a skip
        pytest.skip(f"some serving tests skipped under {python}: {report[-1500:]}")
