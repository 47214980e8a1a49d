"""Where outputs go, so that a user's existing files are never destroyed: one policy for every writer.

- A regular file (or a new one) is written under a name of its own beside it,
  `.<stem>.<pid>@<host>.<token>.partial<suffix>`, and renamed onto it only when complete, so that
  nothing half-written ever carries the final name; two runs writing one output at once each have
  their own partial, and the last rename wins whole.
- A link is written through: its target is replaced, the link stays.
- What is not a regular file (a device, a FIFO, or a process's open file such as /dev/stdout) is
  written directly: renaming onto it would replace the node with a file. "-" is standard output
  where a command offers it (`write_output`).
- A partial left by a process that is dead (killed, or on a machine that lost power) is removed when
  a later run writes an output into its folder; the pid and host in its name tell whose it is.
- A folder that is one output (parquet parts, a video's frames, a model repository) is built in a
  partial folder beside it and renamed into place whole (`OutputFolder`); one that holds files is
  replaced only when asked to be (overwrite), as it may be an earlier run's, or the user's.
- An output that is one of the run's inputs is refused before any work (`refuse_inputs_as_outputs`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import socket
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .errors import InputError, WorkspaceError

STDOUT = "-"
OVERWRITE_FIX = "pass --overwrite (overwrite=True) to replace it whole, or choose another folder"
_HOST = re.sub(r"[^A-Za-z0-9-]", "", socket.gethostname())[:32]
_LEFTOVER = re.compile(
    r"^\.(?P<name>.+)\.(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]*)\.[0-9a-f]{8}\.(?P<kind>partial|old)"
)
_cleaned: set[str] = set()  # folders whose dead partials this process has removed already


def _own_name(name: str, kind: str, suffix: str = "") -> str:
    return f".{name}.{os.getpid()}@{_HOST}.{secrets.token_hex(4)}.{kind}{suffix}"


def _is_open_file_of_a_process(path: Path) -> bool:
    """/dev/stdout, /dev/fd/N, /proc/self/fd/N: links into /proc that stand for an open file."""
    hop = os.path.abspath(path)
    for _ in range(40):  # the kernel's own limit of links followed
        if os.path.realpath(os.path.dirname(hop)).startswith("/proc/"):
            return True
        if not os.path.islink(hop):
            return False
        hop = os.path.join(os.path.dirname(hop), os.readlink(hop))
    return False


def is_written_directly(path: str | os.PathLike) -> bool:
    """True for an output that is no regular file and cannot be replaced by a rename."""
    path = Path(path)
    if _is_open_file_of_a_process(path):
        return True
    try:
        return not stat.S_ISREG(path.stat().st_mode) and not path.is_dir()
    except FileNotFoundError:  # a new file, or a link to one not there yet
        return False


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_dead_partials(folder: str | os.PathLike) -> None:
    """Remove the partials in `folder` that a dead process of this machine left; an `.old` folder of an
    interrupted swap is put back when its folder is missing. Once per folder and process."""
    folder = os.path.realpath(folder)
    if folder in _cleaned or os.name == "nt":  # Windows: os.kill(pid, 0) would signal the process
        return
    _cleaned.add(folder)
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        match = _LEFTOVER.match(entry.name)
        if match is None or match["host"] != _HOST:
            continue
        pid = int(match["pid"])
        if pid == os.getpid() or _is_alive(pid):
            continue
        with contextlib.suppress(OSError):  # another run may be cleaning up at the same time
            original = os.path.join(folder, match["name"])
            if match["kind"] == "old" and not os.path.lexists(original):
                os.rename(entry.path, original)
            elif entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)


class OutputFile:
    """One output file: write it at `path`, then `commit()` moves it into place or `discard()` drops it.

    `path` is a partial beside the final file (beside a link's target), or the final path itself where
    that is no regular file (see the module docstring).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.final = Path(path)
        self.direct = is_written_directly(self.final)
        if self.direct:
            self.path = self.final
            return
        self._target = Path(os.path.realpath(self.final))  # through links
        self._target.parent.mkdir(parents=True, exist_ok=True)
        remove_dead_partials(self._target.parent)
        stem, suffix = self._target.stem, self._target.suffix  # the suffix kept: writers choose by it
        self.path = self._target.with_name(_own_name(stem, "partial", suffix))

    def commit(self) -> Path:
        """Move into place; if that fails, the partial is dropped and the earlier file stays."""
        if not self.direct:
            try:
                with contextlib.suppress(FileNotFoundError):  # a file replaced keeps its permissions
                    os.chmod(self.path, stat.S_IMODE(self._target.stat().st_mode))
                os.replace(self.path, self._target)
            except BaseException:
                self.discard()
                raise
        return self.final

    def discard(self) -> None:
        if not self.direct:
            self.path.unlink(missing_ok=True)


@contextlib.contextmanager
def written(path: str | os.PathLike) -> Iterator[Path]:
    """The path to write `path`'s content at; moved into place when the block ends normally, dropped
    when it raises (also on Ctrl-C: a file cut short is not a result)."""
    output = OutputFile(path)
    try:
        yield output.path
    except BaseException:
        output.discard()
        raise
    output.commit()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """`data` to `path`, whole or not at all."""
    with written(path) as partial, open(partial, "wb") as f:
        f.write(data)
    return Path(path)


def write_output(path: str | os.PathLike, data: bytes) -> None:
    """`data` to `path` (`atomic_write_bytes`), or to standard output when `path` is "-"."""
    if str(path) == STDOUT:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        atomic_write_bytes(path, data)


@contextlib.contextmanager
def naming(output: str | os.PathLike, part: str = "") -> Iterator[None]:
    """An OSError while writing `output` (its file `part`, for a folder) becomes a WorkspaceError that
    names it."""
    try:
        yield
    except WorkspaceError:
        raise
    except OSError as e:
        reason, name = e.strerror or str(e), part or Path(e.filename or "").name
        detail = f" ({name}: {reason})" if name and not _LEFTOVER.match(name) else f" ({reason})"
        raise WorkspaceError(f"cannot write {output}{detail}") from e


def writable_folder(path: str | os.PathLike, fix: str) -> Path:
    """`path` as a folder this process can write to (created if missing), checked before any long work.

    WorkspaceError naming the folder, the reason and `fix` (e.g. "choose another with --out") otherwise.
    """
    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise WorkspaceError(f"cannot write to the folder {path} ({e.strerror or e}): {fix}") from e
    return path


def folder_can_be_made(path: str | os.PathLike, fix: str) -> Path:
    """`path` checked as `writable_folder` checks it, creating nothing (for a check long before the first
    file is written): a folder this process can write to, or a missing one whose nearest existing
    parent is. WorkspaceError naming the folder, the reason and `fix` otherwise."""
    path = Path(path).expanduser()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        reason = f"{existing} is not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        reason = f"{existing} is not writable"
    else:
        return path
    raise WorkspaceError(f"cannot write to the folder {path} ({reason}): {fix}")


def _entries(folder: Path) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except FileNotFoundError:
        return []


def check_output_folder(path: str | os.PathLike, overwrite: bool, fix: str) -> Path:
    """`path` as a folder that can become one output: missing, empty, or (with `overwrite`) to be
    replaced whole; its parent writable. WorkspaceError naming the folder and `fix` otherwise."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise WorkspaceError(f"{path} is a file, not a folder: {fix}")
    folder_can_be_made(path, fix)  # a missing folder is not made yet: a refusal later leaves nothing behind
    entries = _entries(path)
    if entries and not overwrite:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        count = f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}"
        raise WorkspaceError(f"{path} is not empty ({count}: {shown}): {fix}")
    return path


class OutputFolder:
    """A folder that is one output: filled at `path` (a partial folder beside it), then `commit()` puts
    it in place whole, replacing the folder there, or `discard()` drops it."""

    def __init__(self, path: str | os.PathLike, overwrite: bool = False, fix: str = "") -> None:
        self.final = check_output_folder(path, overwrite, fix or OVERWRITE_FIX)
        self._target = Path(os.path.realpath(self.final))
        writable_folder(self._target.parent, fix or OVERWRITE_FIX)
        remove_dead_partials(self._target.parent)
        self.path = self._target.with_name(_own_name(self._target.name, "partial"))
        self.path.mkdir()

    def commit(self) -> Path:
        """Swap the new folder in; another run's folder that lands between the two renames is set aside
        the same way, so the last one to commit wins whole."""
        set_aside = []
        for _ in range(100):
            old = self._target.with_name(_own_name(self._target.name, "old"))
            with contextlib.suppress(FileNotFoundError):
                os.rename(self._target, old)
                set_aside.append(old)
            try:
                os.rename(self.path, self._target)
                break
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    if set_aside:  # the earlier folder goes back where it was
                        os.rename(set_aside.pop(), self._target)
                    raise
        else:
            raise WorkspaceError(f"cannot put {self.final} in place: other runs keep replacing it")
        for old in set_aside:
            shutil.rmtree(old, ignore_errors=True)
        return self.final

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class StreamOutput:
    """An output written as results come (a video, its frames, parquet parts): kept (moved into place)
    when the run ends or the user stops it with Ctrl-C, holding what was done so far; dropped on any
    other error, so that an earlier output of that name stays as it was.

    A subclass sets `name` (what errors name) and counts what it wrote in `written`, and gives
    `_finish` (finalise, then move into place) and `discard`.
    """

    name: Path
    written = 0

    def close(self) -> Path | None:
        """Finalise and move into place; None when nothing was written (an earlier output stays)."""
        if not self.written:
            self.discard()
            return None
        try:
            with naming(self.name):
                return self._finish()
        except BaseException:
            self.discard()
            raise

    def _finish(self) -> Path:
        raise NotImplementedError

    def discard(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc) -> None:
        if kind is None or issubclass(kind, KeyboardInterrupt):
            self.close()
        else:
            self.discard()


class FolderOfFiles(StreamOutput):
    """Files (a video's frames, parquet parts) in a folder that is one output (`OutputFolder`), moved
    into place whole when closed if it holds any."""

    def __init__(self, folder: str | os.PathLike, overwrite: bool = False, fix: str = "") -> None:
        self.name = Path(folder)
        self._output = OutputFolder(self.name, overwrite, fix)

    def write(self, name: str, write: Callable[[Path, Any], object], content: Any) -> Path:
        """The file `name` of the folder, as `write(path, content)` writes it; its final path."""
        with naming(self.name, name):
            write(self._output.path / name, content)
        self.written += 1
        return self.name / name

    def _finish(self) -> Path:
        return self._output.commit()

    def discard(self) -> None:
        self._output.discard()


def _identity(path: Path) -> tuple[int, int] | None:
    """What makes two names one file (links, other spellings, hard links): its device and inode."""
    try:
        status = os.stat(path)
    except OSError:  # not there (yet)
        return None
    return status.st_dev, status.st_ino


def _is_within(path: Path, folder: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(folder))


def refuse_inputs_as_outputs(
    outputs: Iterable[tuple[str, str | os.PathLike | None]],
    inputs: Iterable[str | os.PathLike | None],
    folders: Mapping[str, str | os.PathLike | None] = {},
) -> None:
    """InputError, before any work, when an output would destroy an input or another output.

    outputs: (option, e.g. "--npz", output file) pairs; folders: option -> a folder output that is
    replaced whole (so it must hold no input); inputs: the files read. None entries are left out.
    """
    inputs = [Path(p) for p in inputs if p is not None]
    by_identity = {_identity(p): p for p in inputs}
    named = [(option, Path(p)) for option, p in outputs if p is not None and str(p) != STDOUT]
    claimed: dict[object, str] = {}
    for option, output in named:
        identity = _identity(output)
        if identity is not None and identity in by_identity:
            raise InputError(
                f"{option} {output} is the input {by_identity[identity]}: choose another output path"
            )
        key = identity or os.path.realpath(output)
        if key in claimed:
            raise InputError(f"{claimed[key]} and {option} both name {output}: give each its own path")
        claimed[key] = option
    given = [(option, Path(p)) for option, p in folders.items() if p is not None]
    held = [
        *((f"the input {p}", p) for p in inputs),
        *((f"the {option} output", p) for option, p in named),
        ("the current folder", Path.cwd()),
    ]
    for index, (option, folder) in enumerate(given):
        for what, path in held:
            if _is_within(path, folder):
                raise InputError(
                    f"{option} {folder} is replaced whole, and it holds {what}: choose another folder"
                )
        for other_option, other in given[index + 1 :]:
            if _is_within(other, folder) or _is_within(folder, other):
                raise InputError(
                    f"{option} {folder} and {other_option} {other} overlap, and each is replaced whole: "
                    "give each its own folder"
                )
