"""Atomic file writes: a temp file in the same folder, then a rename. Nothing half-written
is ever visible under the final name, and an OS refusal (full disk, read-only file system,
no permission) becomes one `WriteError` naming the path."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeasc.errors import EdgeascError


class WriteError(EdgeascError):
    """The operating system refused a write: the message names the path and the reason."""

    exit_code = 1


_REASONS = {getattr(errno, name): text for name, text in (
    ("ENOSPC", "no space left on the device"), ("EROFS", "read-only file system"), ("EACCES", "permission denied"),
    ("EPERM", "operation not permitted"), ("EDQUOT", "disk quota exceeded"), ("ENOENT", "no such folder"),
    ("ENOTDIR", "a parent is not a folder"), ("EISDIR", "is a folder")) if hasattr(errno, name)}


def os_reason(exc: OSError) -> str:
    return _REASONS.get(exc.errno, exc.strerror or type(exc).__name__)


def write_error(path: str | Path, exc: OSError) -> WriteError:
    return WriteError(f"cannot write {path}: {os_reason(exc)}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _tempfile_for(path: Path) -> Path:
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    except OSError as exc:
        raise write_error(path, exc) from None
    # mkstemp creates 0600; artifacts get what an ordinary open() would give (0666 less the umask),
    # so that a device container running as another user can read them
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    return Path(tmp)


def _write_temp(path: Path, write: Callable[[Path], None]) -> Path:
    tmp = _tempfile_for(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(path, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call write(tmp_path), fsync it, and rename it onto `path`."""
    path = Path(path)
    tmp = _write_temp(path, write)
    try:
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(path, exc) from None
    return path


def atomic_write_group(writes: dict[Path, Callable[[Path], None]]) -> list[Path]:
    """Several files that belong together (a model and its reports): all land, or none does
    and the files they would have replaced are left as they were."""
    temps: dict[Path, Path] = {}
    try:
        for path, write in writes.items():
            temps[Path(path)] = _write_temp(Path(path), write)
    except BaseException:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
        raise
    backups: dict[Path, Path] = {}
    done: list[Path] = []
    try:
        for path in temps:
            if path.exists():
                backup = path.with_name(f".{path.name}.previous.partial")
                os.replace(path, backup)
                backups[path] = backup
        for path, tmp in temps.items():
            os.replace(tmp, path)
            done.append(path)
    except OSError as exc:
        for path in done:
            path.unlink(missing_ok=True)
        for path, backup in backups.items():
            os.replace(backup, path)
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
        raise write_error(next(iter(temps)), exc) from None
    for backup in backups.values():
        backup.unlink(missing_ok=True)
    return done


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def make_folder(path: str | Path) -> Path:
    """mkdir -p, with an OS refusal as one WriteError."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise WriteError(f"cannot create folder {path}: a file of that name exists") from None
    except OSError as exc:
        raise WriteError(f"cannot create folder {path}: {os_reason(exc)}") from None
    return path


def remove_partials(folder: Path) -> int:
    """Delete temp files left by a killed writer; returns how many."""
    n = 0
    for f in folder.glob(".*.partial"):
        f.unlink(missing_ok=True)
        n += 1
    return n


class FolderLock:
    """An exclusive, advisory lock on a folder (a run directory) for as long as one process
    works in it: a second process is refused at once instead of silently interleaving its
    writes. The kernel drops the lock when the holder dies, so a killed run never leaves a
    stale lock behind (a run that ends removes the file). POSIX flock; on systems without it the lock is a no-op."""

    NAME = ".edgeasc.lock"

    def __init__(self, folder: str | Path, what: str = "run") -> None:
        self.folder, self.what, self._fd = Path(folder), what, None

    def __enter__(self) -> FolderLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self
        path = self.folder / self.NAME
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as exc:
                raise write_error(path, exc) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _holder(fd)
                os.close(fd)
                raise EdgeascError(f"{self.folder} is in use by another edgeasc {self.what} (pid {holder}); "
                                   "wait for it to end, or choose another --out") from None
            try:  # the holder before us may have removed the file between our open and our lock
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.pwrite(fd, str(os.getpid()).encode().ljust(12), 0)
        self._fd, self._path = fd, path
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            self._path.unlink(missing_ok=True)  # while still holding it: see the inode check above
            os.close(self._fd)
            self._fd = None


HOLDER_WAIT = 0.5  # seconds a refused contender waits for the holder's pid to appear


def _holder(fd: int) -> str:
    """The pid in a lock file someone else holds, or '?'. The holder writes it just after it
    locks: a contender that meets the lock in that instant waits a moment for it."""
    deadline = time.monotonic() + HOLDER_WAIT
    while True:
        pid = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if pid or time.monotonic() > deadline:
            return pid or "?"
        time.sleep(0.005)


def missing_folders(path: str | Path) -> list[Path]:
    """`path` and its ancestors that do not exist yet, innermost first: what a mkdir -p would
    create, and what remove_empty_folders takes away again when the work that needed them failed."""
    path = Path(path).absolute()
    return [p for p in (path, *path.parents) if not p.exists()]


def remove_empty_folders(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (someone else's files) or already gone
            return


def refuse_input_as_output(output: str | Path, inputs: list[str | Path], option: str) -> None:
    """An output path that is one of the command's inputs (the same file, through any path or
    link) is refused before any work: writing it would destroy what the command reads."""
    from edgeasc.errors import ConfigError

    out = Path(output)
    if not out.exists():
        return
    for given in inputs:
        if str(given) == "-":
            continue
        try:
            same = os.path.samefile(out, given)
        except OSError:  # an input that does not exist is reported where it is read
            continue
        if same:
            raise ConfigError(f"{option} {out} is one of the inputs ({given}): choose another path")


def is_within(path: str | Path, folder: str | Path) -> bool:
    """Whether `path` is `folder` or lies inside it, through any symlink (both resolved)."""
    try:
        path, folder = Path(path).resolve(), Path(folder).resolve()
    except (OSError, RuntimeError):  # a symlink loop: not a folder anything lies in
        return False
    return path == folder or folder in path.parents


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks (checkpoints and teacher files are
    recorded by it, so a later run or `package --check` can tell when one changed)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
