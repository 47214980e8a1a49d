"""Video in and out (OpenCV), the `video` command, and Ctrl-C leaving finished, playable files."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from support.reference import reference_dir
from trt_metric3d import Metric3D
from trt_metric3d.cli import main
from trt_metric3d.errors import InputError
from trt_metric3d.video import FrameSource, NpzWriter, VideoWriter

HEIGHT, WIDTH = 60, 80


def _clip(path: Path, frames: int = 3, codec: str = "mp4v") -> Path:
    """A short clip panning over the coffee photo."""
    photo = cv2.imread(str(reference_dir() / "coffee.png"))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), 10.0, (WIDTH, HEIGHT))
    for i in range(frames):
        writer.write(cv2.resize(photo[:, 20 * i : 20 * i + 400], (WIDTH, HEIGHT)))
    writer.release()
    return path


def _truncated(path: Path, frames: int, keep: float) -> tuple[Path, int]:
    """A Motion-JPEG .avi of `frames` frames cut to `keep` of its bytes, and how many frames OpenCV
    still reads from it. (An .mp4 from OpenCV keeps its index at the end: cut, it cannot be opened.)"""
    data = _clip(path.with_name(f"whole_{path.name}"), frames, "MJPG").read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    capture = cv2.VideoCapture(str(path))
    readable = 0
    while capture.read()[0]:
        readable += 1
    return path, readable


def _frames(path: Path) -> list[np.ndarray]:
    return list(FrameSource(path))


def test_frame_source_reads_rgb_frames(tmp_path):
    frames = _frames(_clip(tmp_path / "clip.mp4", frames=4))
    assert len(frames) == 4 and all(f.shape == (HEIGHT, WIDTH, 3) and f.dtype == np.uint8 for f in frames)
    bgr = cv2.VideoCapture(str(tmp_path / "clip.mp4")).read()[1]
    np.testing.assert_array_equal(frames[0], bgr[..., ::-1])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing.mp4", "does not exist"),
        (lambda p: (p / "junk.mp4").write_bytes(b"\0not a video" * 100) and p / "junk.mp4", "junk.mp4"),
    ],
    ids=["missing", "corrupt"],
)
def test_bad_videos_are_named(tmp_path, make, message):
    with pytest.raises(InputError, match=message):
        FrameSource(make(tmp_path))


def test_a_truncated_video_says_it_ended_early(tmp_path):
    whole = FrameSource(_clip(tmp_path / "whole.avi", 9, "MJPG"))
    assert len(list(whole)) == 9 and whole.declared_frames == 9 and whole.ended_early is None
    path, readable = _truncated(tmp_path / "cut.avi", 9, keep=0.7)
    assert 0 < readable < 9
    frames = FrameSource(path)
    assert len(list(frames)) == readable == frames.frames_read
    assert frames.ended_early == (
        f"{path} ended after {readable} of the 9 frames its container declares: the file is truncated or "
        "damaged"
    )


def test_a_truncated_mp4_cannot_be_opened_and_says_so(tmp_path):
    data = _clip(tmp_path / "whole.mp4", 9).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) * 7 // 10])
    with pytest.raises(InputError, match=r"cannot open video .*cut\.mp4: OpenCV could not read it"):
        FrameSource(tmp_path / "cut.mp4")


def test_a_camera_that_is_not_there_is_named():
    with pytest.raises(InputError, match="cannot open camera 99"):
        FrameSource(99)


def test_ctrl_c_leaves_a_finished_playable_video(tmp_path):
    path = tmp_path / "depth.mp4"
    frame = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
    with pytest.raises(KeyboardInterrupt), VideoWriter(path, fps=10) as writer:
        for _ in range(3):
            writer.write(frame)
        raise KeyboardInterrupt
    assert len(_frames(path)) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["depth.mp4"]


def test_a_frame_of_another_size_is_fitted_to_the_video(tmp_path):
    path = tmp_path / "depth.avi"
    with VideoWriter(path, fps=10) as writer:
        writer.write(np.zeros((HEIGHT, WIDTH, 3), np.uint8))
        writer.write(np.zeros((2 * HEIGHT, WIDTH, 3), np.uint8))
    frames = _frames(path)
    assert [f.shape for f in frames] == [(HEIGHT, WIDTH, 3)] * 2


def test_npz_writer_streams_frames_into_one_file(tmp_path):
    depths = [np.full((4, 5), i, np.float32) for i in range(3)]
    with NpzWriter(tmp_path / "d.npz") as npz:
        for i, d in enumerate(depths):
            npz.add(i, d)
    with np.load(tmp_path / "d.npz") as loaded:
        assert sorted(loaded.files) == ["frame_000000", "frame_000001", "frame_000002"]
        np.testing.assert_array_equal(loaded["frame_000002"], depths[2])


def test_video_command_writes_depth_equal_to_predict(small_checkpoint, tmp_path, stand_in_network):
    clip = _clip(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    args = ["video", str(clip), "--fx", "70", "--backend", "torch", "--device", "cpu", "--side-by-side"]
    args += ["--out", str(out / "depth.mp4"), "--npz", str(out / "depth.npz"), "--ply", str(out / "ply")]
    result = CliRunner().invoke(main, [*args, "--checkpoint", str(small_checkpoint)])
    assert result.exit_code == 0, result.output
    assert "3 frame(s), 0 dropped" in result.output and "fps" in result.output
    video = _frames(out / "depth.mp4")
    assert len(video) == 3 and video[0].shape == (HEIGHT, 2 * WIDTH, 3)
    assert len(list((out / "ply").glob("*.ply"))) == 3
    with Metric3D("vit-small", "torch", "fp32", "cpu", str(small_checkpoint)) as runtime:
        expected = runtime.predict(_frames(clip)[1], fx=70.0).depth
    with np.load(out / "depth.npz") as depths:
        np.testing.assert_array_equal(depths["frame_000001"], expected)
    assert not [p for p in out.rglob(".*")], "partial files left behind"


def test_ctrl_c_during_the_video_command_finalises_the_outputs(
    small_checkpoint, tmp_path, monkeypatch, stand_in_network
):
    from trt_metric3d import results

    calls = []

    def interrupt_on_second_frame(self, depth):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return np.zeros((*depth.shape, 3), np.uint8)

    monkeypatch.setattr(results.SteadyDepthPreview, "__call__", interrupt_on_second_frame)
    clip = _clip(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    args = ["video", str(clip), "--fx", "70", "--backend", "torch", "--device", "cpu"]
    args += ["--out", str(out / "depth.mp4"), "--npz", str(out / "depth.npz")]
    result = CliRunner().invoke(main, [*args, "--checkpoint", str(small_checkpoint)])
    assert result.exit_code == 130, result.output
    assert "interrupted" in result.output
    assert len(_frames(out / "depth.mp4")) == 1
    with np.load(out / "depth.npz") as depths:
        assert len(depths.files) >= 1
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "partial files left behind"


def test_the_video_command_warns_of_a_truncated_file_and_keeps_its_frames(
    small_checkpoint, tmp_path, stand_in_network
):
    """Every frame the file holds is done and kept; the last line says the file ended early; exit 0."""
    clip, readable = _truncated(tmp_path / "cut.avi", 4, keep=0.6)
    assert 0 < readable < 4
    args = ["video", str(clip), "--fx", "70", "--backend", "torch", "--device", "cpu"]
    args += ["--npz", str(tmp_path / "depth.npz"), "--checkpoint", str(small_checkpoint)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"{readable} frame(s), 0 dropped" in result.output
    assert result.output.strip().splitlines()[-1] == (
        f"warning: {clip} ended after {readable} of the 4 frames its container declares: the file is "
        "truncated or damaged; the outputs hold the frames read"
    )
    with np.load(tmp_path / "depth.npz") as depths:
        assert len(depths.files) == readable


def test_video_needs_a_source(small_checkpoint):
    result = CliRunner().invoke(main, ["video", "--fx", "100", "--checkpoint", str(small_checkpoint)])
    assert result.exit_code == 2 and "give a video file or --camera N" in result.output


# --- a user's earlier outputs survive a failed run -----------------------------------------------------


@pytest.fixture
def stand_in_model(stand_in_network, small_checkpoint):
    """The video command runs the stand-in network (the plumbing tests need no ViT)."""
    return small_checkpoint


def _earlier_outputs(folder: Path) -> dict[str, bytes]:
    """A good earlier run's k.mp4, k.npz (9 frames) and frames/; what each file held."""
    _clip(folder / "k.mp4", frames=9)
    with NpzWriter(folder / "k.npz") as npz:
        for index in range(9):
            npz.add(index, np.full((HEIGHT, WIDTH), 2.0, np.float32))
    (folder / "frames").mkdir()
    for index in range(9):
        np.save(folder / "frames" / f"frame_{index:06d}_depth.npy", np.zeros((2, 2), np.float32))
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _video_args(folder: Path, checkpoint: Path, *extra: str) -> list[str]:
    args = ["video", str(folder / "clip.mp4"), "--fx", "70", "--backend", "torch", "--device", "cpu"]
    return [
        *args,
        "--out",
        str(folder / "k.mp4"),
        "--npz",
        str(folder / "k.npz"),
        *extra,
        "--checkpoint",
        str(checkpoint),
    ]


def test_a_run_that_fails_to_load_the_model_leaves_the_earlier_outputs(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    earlier = _earlier_outputs(work)
    _clip(work / "clip.mp4")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    result = CliRunner().invoke(main, _video_args(work, bad, "--frames", str(work / "frames"), "--overwrite"))
    assert result.exit_code == 1 and "bad.pth is not a readable PyTorch checkpoint" in result.output
    now = {str(p.relative_to(work)): p.read_bytes() for p in sorted(work.rglob("*")) if p.is_file()}
    assert now == {**earlier, "clip.mp4": (work / "clip.mp4").read_bytes()}, "an earlier output changed"


def test_a_full_disk_on_frames_names_that_output_and_keeps_the_earlier_ones(
    stand_in_model, tmp_path, monkeypatch
):
    import errno

    from trt_metric3d import io

    earlier = _earlier_outputs(tmp_path)
    _clip(tmp_path / "clip.mp4", frames=4)
    real_write_npy, calls = io.write_npy, []

    def disk_full_on_third(path, array):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write_npy(path, array)

    monkeypatch.setattr(io, "write_npy", disk_full_on_third)
    args = _video_args(tmp_path, stand_in_model, "--frames", str(tmp_path / "frames"), "--overwrite")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert (
        f"cannot write {tmp_path / 'frames'} (frame_000002_depth.npy: No space left on device)"
        in result.output
    )
    now = {str(p.relative_to(tmp_path)): p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    assert now == {**earlier, "clip.mp4": (tmp_path / "clip.mp4").read_bytes()}


def test_a_finished_run_replaces_a_frames_folder_whole_with_overwrite(stand_in_model, tmp_path):
    _earlier_outputs(tmp_path)  # 9 frames in frames/
    _clip(tmp_path / "clip.mp4", frames=3)
    args = _video_args(tmp_path, stand_in_model, "--frames", str(tmp_path / "frames"))
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 1 and f"{tmp_path / 'frames'} is not empty (9 entries" in refused.output
    assert "pass --overwrite to replace it whole, or choose another folder with --frames" in refused.output
    result = CliRunner().invoke(main, [*args, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == [
        f"frame_{i:06d}_depth.npy" for i in range(3)
    ]
    with np.load(tmp_path / "k.npz") as depths:
        assert len(depths.files) == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "partials left behind"


@pytest.mark.parametrize("spelling", ["same path", "another path", "a link"])
def test_an_output_that_is_the_input_video_is_refused(stand_in_model, tmp_path, spelling, monkeypatch):
    monkeypatch.chdir(tmp_path)
    clip = _clip(tmp_path / "clip.mp4")
    before = clip.read_bytes()
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.mp4").symlink_to(clip)
    out = {"same path": "clip.mp4", "another path": "sub/../clip.mp4", "a link": "link.mp4"}[spelling]
    args = ["video", "clip.mp4", "--fx", "70", "--backend", "torch", "--device", "cpu"]
    result = CliRunner().invoke(main, [*args, "--out", out, "--checkpoint", str(stand_in_model)])
    assert result.exit_code == 1, result.output
    assert f"Error: --out {out} is the input clip.mp4: choose another output path" in result.output
    assert clip.read_bytes() == before
