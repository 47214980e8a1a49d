"""Where tritonserver's own log goes: a file by default (quiet start), the terminal with verbose.

A stand-in tritonserver (a script in a PyTriton-like folder) prints start-up lines as the real one
does and answers the readiness probe, so no PyTriton is needed.
"""

import stat
import sys
import textwrap

import pytest

from trt_metric3d.serving import tritonserver_process
from trt_metric3d.serving.tritonserver_process import TritonServer, free_ports

STARTUP_LINE = "I1201 12:00:00.000 server.cc:1] a start-up line of the stand-in tritonserver"

STAND_IN = f"""#!{sys.executable}
import http.server, sys
port = int(next(a for a in sys.argv if a.startswith("--http-port=")).split("=")[1])
for _ in range(26):
    print({STARTUP_LINE!r}, flush=True)
    print({STARTUP_LINE!r}, file=sys.stderr, flush=True)

class Ready(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/v2/health/ready" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", port), Ready).serve_forever()
"""


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    root = tmp_path / "pytriton"
    server = root / "tritonserver" / "bin" / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "tritonserver" / "python_backend_stubs" / version
    for folder in (server.parent, stub, root / "tritonserver" / "backends" / "python"):
        folder.mkdir(parents=True)
    (stub / "triton_python_backend_stub").write_text("")
    server.write_text(textwrap.dedent(STAND_IN))
    server.chmod(server.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(tritonserver_process, "pytriton_dir", lambda: root)
    return tmp_path / "models"


@pytest.mark.parametrize("verbose", [False, True])
def test_the_servers_start_up_lines_show_only_when_verbose(stand_in, capfd, verbose):
    with TritonServer(stand_in, free_ports(), "127.0.0.1", verbose=verbose) as server:
        assert server.running()
        log = server.log_file
    out, err = capfd.readouterr()
    shown = (out + err).count(STARTUP_LINE)
    assert shown == (52 if verbose else 0), out + err
    if not verbose:
        assert log is not None and not log.exists()  # kept in the server's temporary folder, removed


def test_a_given_log_path_gets_the_log(stand_in, tmp_path, capfd):
    with TritonServer(stand_in, free_ports(), "127.0.0.1", log_path=tmp_path / "triton.log"):
        pass
    out, err = capfd.readouterr()
    assert STARTUP_LINE not in out + err
    assert (tmp_path / "triton.log").read_text().count(STARTUP_LINE) == 52
