"""Outputs never destroy what a user has: a file is replaced whole or not at all, each run has its own
partial name, links are written through, devices and FIFOs written directly, dead runs' partials
removed, folder outputs replaced whole only when asked, an output that is an input refused."""

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from trt_metric3d.errors import InputError, WorkspaceError
from trt_metric3d.io import atomic_write_bytes
from trt_metric3d.output_files import OutputFolder, refuse_inputs_as_outputs, write_output
from trt_metric3d.video import NpzWriter, VideoWriter


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _host() -> str:
    from trt_metric3d import output_files

    return output_files._HOST


def test_two_writers_of_one_npz_at_once_each_finish_whole_and_the_last_wins(tmp_path):
    path = tmp_path / "same.npz"
    first, second = NpzWriter(path), NpzWriter(path)
    for index in range(3):
        first.add(index, np.full((4, 5), 1.0, np.float32))
        second.add(index, np.full((4, 5), 2.0, np.float32))
    first.close()
    second.close()
    with np.load(path) as loaded:
        assert len(loaded.files) == 3 and float(loaded["frame_000002"][0, 0]) == 2.0
    assert os.listdir(tmp_path) == ["same.npz"]


def test_two_video_writers_of_one_path_at_once(tmp_path):
    path = tmp_path / "same.mp4"
    writers = [VideoWriter(path, fps=10), VideoWriter(path, fps=10)]
    for _ in range(3):
        for writer in writers:
            writer.write(np.zeros((32, 48, 3), np.uint8))
    assert [writer.close() for writer in writers] == [path, path]
    assert os.listdir(tmp_path) == ["same.mp4"]


def test_an_error_keeps_the_earlier_npz_and_removes_the_partial(tmp_path):
    path = tmp_path / "k.npz"
    with NpzWriter(path) as earlier:
        earlier.add(0, np.ones((2, 2), np.float32))
    before = path.read_bytes()
    with pytest.raises(RuntimeError), NpzWriter(path) as npz:
        npz.add(0, np.zeros((2, 2), np.float32))
        raise RuntimeError("the model broke")
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["k.npz"]


def test_a_writer_without_frames_leaves_the_earlier_file(tmp_path):
    path = tmp_path / "k.npz"
    path.write_bytes(b"earlier")
    with pytest.raises(KeyboardInterrupt), NpzWriter(path):
        raise KeyboardInterrupt  # Ctrl-C before the first frame
    assert path.read_bytes() == b"earlier" and os.listdir(tmp_path) == ["k.npz"]


def test_a_link_is_written_through_and_kept(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "out.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    atomic_write_bytes(link, b"new")
    assert link.is_symlink() and target.read_text() == "new"


def test_a_replaced_file_keeps_its_permissions(tmp_path):
    path = tmp_path / "shared.json"
    path.write_text("old")
    path.chmod(0o640)
    atomic_write_bytes(path, b"new")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_a_fifo_is_written_directly(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    atomic_write_bytes(fifo, b"through the pipe")
    reader.join(timeout=10)
    assert got == [b"through the pipe"] and stat.S_ISFIFO(fifo.lstat().st_mode)


@pytest.mark.skipif(os.geteuid() != 0, reason="making a device node needs root")
def test_an_npz_to_a_character_device_keeps_the_device(tmp_path):
    device = tmp_path / "null"
    os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # what /dev/null is
    with NpzWriter(device) as npz:
        npz.add(0, np.zeros((2, 2), np.float32))
    assert stat.S_ISCHR(device.lstat().st_mode) and os.listdir(tmp_path) == ["null"]


def test_dash_is_standard_output(capfdbinary):
    write_output("-", b'{"rows": []}')
    assert capfdbinary.readouterr().out == b'{"rows": []}'


def test_partials_of_dead_processes_go_when_a_run_writes_there(tmp_path):
    dead, alive = _dead_pid(), os.getppid()
    stale = tmp_path / f".k.{dead}@{_host()}.0123abcd.partial.mp4"
    running = tmp_path / f".k.{alive}@{_host()}.0123abcd.partial.npz"
    elsewhere = tmp_path / f".k.{dead}@another-host.0123abcd.partial.npz"  # its pid means nothing here
    stale_folder = tmp_path / f".frames.{dead}@{_host()}.0123abcd.partial"
    for path in (stale, running, elsewhere):
        path.write_bytes(b"partial")
    stale_folder.mkdir()
    (stale_folder / "frame_000000_depth.npy").write_bytes(b"partial")
    atomic_write_bytes(tmp_path / "result.json", b"{}")
    assert sorted(os.listdir(tmp_path)) == sorted([running.name, elsewhere.name, "result.json"])


def test_a_folder_swapped_out_by_a_dead_run_is_put_back(tmp_path):
    set_aside = tmp_path / f".frames.{_dead_pid()}@{_host()}.0123abcd.old"
    set_aside.mkdir()
    (set_aside / "frame_000000_depth.npy").write_bytes(b"earlier")
    atomic_write_bytes(tmp_path / "other.json", b"{}")
    assert (tmp_path / "frames" / "frame_000000_depth.npy").read_bytes() == b"earlier"


def test_a_folder_output_is_replaced_whole_only_when_asked(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    (folder / "part-00007.parquet").write_bytes(b"an earlier run's")
    with pytest.raises(WorkspaceError, match=r"parts is not empty \(1 entry: part-00007.parquet\): pass"):
        OutputFolder(folder, fix="pass --overwrite")
    output = OutputFolder(folder, overwrite=True)
    (output.path / "part-00000.parquet").write_bytes(b"new")
    assert (folder / "part-00007.parquet").exists(), "the earlier folder stays until the run ends"
    output.commit()
    assert os.listdir(folder) == ["part-00000.parquet"] and os.listdir(tmp_path) == ["parts"]


def test_a_discarded_folder_output_leaves_the_earlier_one(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "frame_000000_depth.npy").write_bytes(b"earlier")
    output = OutputFolder(folder, overwrite=True)
    (output.path / "frame_000000_depth.npy").write_bytes(b"new")
    output.discard()
    assert (folder / "frame_000000_depth.npy").read_bytes() == b"earlier"
    assert os.listdir(tmp_path) == ["frames"]


def test_two_runs_committing_one_folder_end_with_one_whole(tmp_path):
    runs = [OutputFolder(tmp_path / "frames") for _ in range(2)]
    for number, run in enumerate(runs):
        for index in range(3):
            (run.path / f"frame_{index}").write_text(str(number))
    for run in runs:
        run.commit()
    assert {p.read_text() for p in (tmp_path / "frames").iterdir()} == {"1"}
    assert os.listdir(tmp_path) == ["frames"]


@pytest.mark.parametrize("spelling", ["same", "dotted", "link", "hard link"])
def test_an_output_that_is_an_input_is_refused(tmp_path, spelling, monkeypatch):
    monkeypatch.chdir(tmp_path)
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"video")
    (tmp_path / "sub").mkdir()
    output = {
        "same": clip,
        "dotted": Path("sub/../clip.mp4"),
        "link": tmp_path / "link.mp4",
        "hard link": tmp_path / "hard.mp4",
    }[spelling]
    if spelling == "link":
        output.symlink_to(clip)
    if spelling == "hard link":
        os.link(clip, output)
    with pytest.raises(InputError, match=f"--out {output} is the input {clip}: choose another output"):
        refuse_inputs_as_outputs({"--out": output}.items(), [clip])


def test_outputs_that_name_one_file_or_hold_inputs_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    clip = tmp_path / "videos" / "clip.mp4"
    clip.parent.mkdir()
    clip.write_bytes(b"video")
    with pytest.raises(InputError, match=f"--out and --npz both name {tmp_path / 'k.mp4'}: give each"):
        refuse_inputs_as_outputs([("--out", Path("k.mp4")), ("--npz", tmp_path / "k.mp4")], [clip])
    with pytest.raises(InputError, match=f"--frames {clip.parent} is replaced whole, and it holds the input"):
        refuse_inputs_as_outputs([], [clip], {"--frames": clip.parent})
    with pytest.raises(InputError, match="holds the --npz output"):
        refuse_inputs_as_outputs([("--npz", tmp_path / "f" / "k.npz")], [clip], {"--frames": tmp_path / "f"})
    with pytest.raises(InputError, match="--frames . is replaced whole, and it holds the current folder"):
        refuse_inputs_as_outputs([], [], {"--frames": Path(".")})
    with pytest.raises(InputError, match="--frames f and --ply f/ply overlap"):
        refuse_inputs_as_outputs([], [clip], {"--frames": Path("f"), "--ply": Path("f/ply")})
    refuse_inputs_as_outputs([("--out", Path("k.mp4"))], [clip], {"--frames": Path("frames")})  # all fine


def test_a_link_to_a_folder_output_is_written_through_and_kept(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "frame_000000_depth.npy").write_bytes(b"earlier")
    link = tmp_path / "frames"
    link.symlink_to(tmp_path / "real")
    output = OutputFolder(link, overwrite=True)
    (output.path / "frame_000000_depth.npy").write_bytes(b"new")
    output.commit()
    assert link.is_symlink() and (tmp_path / "real" / "frame_000000_depth.npy").read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == ["frames", "real"]


def test_a_folder_that_cannot_be_put_in_place_leaves_the_earlier_one(tmp_path, monkeypatch):
    import errno

    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "frame_000000_depth.npy").write_bytes(b"earlier")
    output = OutputFolder(folder, overwrite=True)
    real_rename = os.rename

    def refused(source, destination):
        if Path(source) == output.path:
            raise OSError(errno.EACCES, "Permission denied", str(destination))
        real_rename(source, destination)

    monkeypatch.setattr(os, "rename", refused)
    with pytest.raises(OSError, match="Permission denied"):
        output.commit()
    assert (folder / "frame_000000_depth.npy").read_bytes() == b"earlier"


def test_a_file_that_cannot_be_put_in_place_leaves_no_partial(tmp_path, monkeypatch):
    import errno

    (tmp_path / "k.json").write_bytes(b"earlier")

    def refused(source, destination):
        raise OSError(errno.EACCES, "Permission denied", str(destination))

    monkeypatch.setattr(os, "replace", refused)
    with pytest.raises(OSError, match="Permission denied"):
        atomic_write_bytes(tmp_path / "k.json", b"new")
    assert os.listdir(tmp_path) == ["k.json"] and (tmp_path / "k.json").read_bytes() == b"earlier"
