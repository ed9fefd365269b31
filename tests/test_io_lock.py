"""The run lock (io.FolderLock) between real processes: exactly one of two racing processes
wins and the other is refused at once with the exact message; the lock holds an inode that is
still the folder's lock file (a lock on a file its holder just removed is not accepted); and
the atomic writes' small promises (file mode, reasons, folders), each pinned exactly."""

import errno
import multiprocessing
import os
import stat
import time
from pathlib import Path

import pytest

from edgeasc import io
from edgeasc.errors import EdgeascError
from edgeasc.io import FolderLock, WriteError

MESSAGE = "{} is in use by another edgeasc {} (pid {}); wait for it to end, or choose another --out"


def _race(folder, what, start, done, results):
    """One contender: wait for the start, try the lock, report, and hold a won lock until every
    contender has reported."""
    start.wait()
    try:
        with FolderLock(folder, what):
            results.put(("won", os.getpid(), (Path(folder) / FolderLock.NAME).read_text()))
            done.wait(20)
    except EdgeascError as exc:
        results.put(("refused", os.getpid(), str(exc)))


def test_two_processes_racing_for_the_lock_one_wins_the_other_is_refused_at_once(tmp_path):
    ctx = multiprocessing.get_context("fork")  # the children run this process's (possibly mutated) io module
    start, done, results = ctx.Barrier(2), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(tmp_path), "training", start, done, results)) for _ in range(2)]
    for p in procs:
        p.start()
    try:
        got = sorted([results.get(timeout=20), results.get(timeout=20)])  # a blocking lock would never report
    finally:
        done.set()
        for p in procs:
            p.join(20)
    assert [p.exitcode for p in procs] == [0, 0]
    (_, winner, content), (_, loser, message) = sorted(got, key=lambda r: r[0] != "won")
    assert [r[0] for r in got] == ["refused", "won"] and {winner, loser} == {p.pid for p in procs}
    assert content == str(winner).ljust(12)  # the holder's pid, padded to overwrite a longer one
    assert message == MESSAGE.format(tmp_path, "training", winner)
    assert not (tmp_path / FolderLock.NAME).exists()  # the winner removed its file on the way out
    with FolderLock(tmp_path):  # and the folder is free again
        assert (tmp_path / FolderLock.NAME).read_text().strip() == str(os.getpid())


def _hold(folder, ready, release):
    with FolderLock(folder, "export"):
        ready.set()
        release.wait(20)


def test_a_lock_held_by_another_process_refuses_until_it_ends_and_a_killed_holder_leaves_none(tmp_path):
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(tmp_path), ready, release))
    holder.start()
    try:
        assert ready.wait(20)
        began = time.monotonic()
        with pytest.raises(EdgeascError) as refused:
            with FolderLock(tmp_path, "run"):
                pass
        assert time.monotonic() - began < 5  # refused at once, not after the holder ends
        assert str(refused.value) == MESSAGE.format(tmp_path, "run", holder.pid)
        assert type(refused.value) is EdgeascError
    finally:
        release.set()
        holder.join(20)
    with FolderLock(tmp_path, "run"):
        pass
    # killed while holding it: the kernel drops the lock; the stale file (and pid) does not block
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(tmp_path), ready, release))
    holder.start()
    assert ready.wait(20)
    holder.kill()
    holder.join(20)
    assert (tmp_path / FolderLock.NAME).read_text().strip() == str(holder.pid)
    with FolderLock(tmp_path, "run") as lock:
        assert lock._fd is not None
        assert (tmp_path / FolderLock.NAME).read_text() == str(os.getpid()).ljust(12)
    assert not (tmp_path / FolderLock.NAME).exists() and lock._fd is None


def test_a_second_open_in_the_same_process_is_refused_too(tmp_path):
    """flock belongs to the open file: a second FolderLock conflicts even in its own process.
    The holder writes its pid just after it locks: a contender waits a moment for it, and
    says '?' only when none comes."""
    import threading

    with FolderLock(tmp_path, "training"):
        lock_file = tmp_path / FolderLock.NAME
        lock_file.write_text("")
        late = threading.Timer(0.1, lambda: lock_file.write_text("4242"))
        late.start()
        with pytest.raises(EdgeascError) as refused:
            FolderLock(tmp_path, "training").__enter__()
        late.join()
        assert str(refused.value) == MESSAGE.format(tmp_path, "training", 4242)
        lock_file.write_text("")
        began = time.monotonic()
        with pytest.raises(EdgeascError) as refused:
            FolderLock(tmp_path, "training").__enter__()
        assert io.HOLDER_WAIT == 0.5 <= time.monotonic() - began < 1.0  # polls often, gives up in time
        assert str(refused.value) == MESSAGE.format(tmp_path, "training", "?")


def test_a_lock_on_a_file_its_holder_removed_meanwhile_is_not_accepted(tmp_path, monkeypatch):
    """The previous holder ends (removes the file, then unlocks) between our open and our flock:
    our lock is then on an unlinked inode that nobody else can see, so we must open again."""
    import fcntl

    path = tmp_path / FolderLock.NAME
    previous = FolderLock(tmp_path).__enter__()
    real, calls = fcntl.flock, []

    def previous_ends_first(fd, op):
        calls.append(fd)
        if len(calls) == 1:
            previous.__exit__(None, None, None)  # unlinks the file we have open, and unlocks it
            assert os.fstat(fd).st_nlink == 0
        return real(fd, op)

    monkeypatch.setattr(fcntl, "flock", previous_ends_first)
    lock = FolderLock(tmp_path).__enter__()
    monkeypatch.undo()
    try:
        assert len(calls) == 2 and lock._fd == calls[1]  # the second try, on a new file
        assert os.fstat(lock._fd).st_nlink == 1 and os.stat(path).st_ino == os.fstat(lock._fd).st_ino
        assert path.read_text() == str(os.getpid()).ljust(12)
        with pytest.raises(EdgeascError, match="is in use by another edgeasc run"):
            FolderLock(tmp_path).__enter__()  # the lock we hold is the one everybody sees
    finally:
        lock.__exit__(None, None, None)


def test_a_lock_on_a_replaced_file_is_not_accepted_and_the_new_holder_wins(tmp_path, monkeypatch):
    """Between our open and our flock the holder ended and a third process took a fresh lock
    file: our lock on the old inode is no lock; the retry meets the new holder and is refused."""
    import fcntl

    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    previous = FolderLock(tmp_path).__enter__()
    third = ctx.Process(target=_hold, args=(str(tmp_path), ready, release))
    real, calls = fcntl.flock, []

    def others_move_first(fd, op):
        calls.append(fd)
        if len(calls) == 1:
            previous.__exit__(None, None, None)
            third.start()
            assert ready.wait(20)  # the third process holds a new file under the same name
        return real(fd, op)

    monkeypatch.setattr(fcntl, "flock", others_move_first)
    try:
        with pytest.raises(EdgeascError) as refused:
            FolderLock(tmp_path, "training").__enter__()
        assert len(calls) == 2
        assert str(refused.value) == MESSAGE.format(tmp_path, "training", third.pid)
    finally:
        monkeypatch.undo()
        release.set()
        third.join(20)
    assert third.exitcode == 0


def test_an_unwritable_folder_is_one_write_error(tmp_path):
    with pytest.raises(WriteError) as refused:
        FolderLock(tmp_path / "missing").__enter__()
    assert str(refused.value) == f"cannot write {tmp_path / 'missing' / FolderLock.NAME}: no such folder"
    FolderLock(tmp_path).__exit__(None, None, None)  # never entered: nothing to release


# ----------------------------------------------------------------------------- atomic writes
def test_atomic_files_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    old = os.umask(0o027)
    try:
        path = io.atomic_write_text(tmp_path / "summary.json", "{}")
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
        assert io._umask() == 0o027 and io._umask() == 0o027  # reading it leaves it as it was
        os.umask(0o022)
        assert stat.S_IMODE(io.atomic_write_json(tmp_path / "b.json", {"a": [1]}).stat().st_mode) == 0o644
    finally:
        os.umask(old)
    assert (tmp_path / "b.json").read_text() == '{\n  "a": [\n    1\n  ]\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json", "summary.json"]


def test_the_temp_file_sits_next_to_the_target_with_a_partial_name(tmp_path):
    seen = []
    io.atomic_write(tmp_path / "model.onnx", lambda tmp: seen.append(tmp) or tmp.write_bytes(b"x"))
    (tmp,) = seen
    assert tmp.parent == tmp_path and tmp.name.startswith(".model.onnx.") and tmp.name.endswith(".partial")
    assert not tmp.exists() and (tmp_path / "model.onnx").read_bytes() == b"x"


def test_write_errors_name_the_path_and_the_reason(tmp_path, monkeypatch):
    assert io.os_reason(OSError(errno.ENOSPC, "x")) == "no space left on the device"
    assert io.os_reason(OSError(errno.EROFS, "x")) == "read-only file system"
    assert io.os_reason(OSError(errno.EACCES, "x")) == "permission denied"
    assert io.os_reason(OSError(errno.EPERM, "x")) == "operation not permitted"
    assert io.os_reason(OSError(errno.EDQUOT, "x")) == "disk quota exceeded"
    assert io.os_reason(OSError(errno.ENOENT, "x")) == "no such folder"
    assert io.os_reason(OSError(errno.ENOTDIR, "x")) == "a parent is not a folder"
    assert io.os_reason(OSError(errno.EISDIR, "x")) == "is a folder"
    assert io.os_reason(OSError(errno.EIO, "Input/output error")) == "Input/output error"
    assert io.os_reason(OSError("no errno")) == "OSError"
    assert io.os_reason(FileExistsError()) == "FileExistsError"
    err = io.write_error(tmp_path / "m.onnx", OSError(errno.ENOSPC, "x"))
    assert type(err) is WriteError and err.exit_code == 1 and str(err) == f"cannot write {tmp_path / 'm.onnx'}: " \
        "no space left on the device"
    # the folder is missing: mkstemp's refusal names the target
    with pytest.raises(WriteError) as refused:
        io.atomic_write_text(tmp_path / "nowhere" / "a.txt", "x")
    assert str(refused.value) == f"cannot write {tmp_path / 'nowhere' / 'a.txt'}: no such folder"
    # the writer's own OSError: the target named, the temp file gone
    with pytest.raises(WriteError) as refused:
        io.atomic_write(tmp_path / "a.txt", lambda tmp: (_ for _ in ()).throw(OSError(errno.EDQUOT, "quota")))
    assert str(refused.value) == f"cannot write {tmp_path / 'a.txt'}: disk quota exceeded"
    assert list(tmp_path.iterdir()) == []


def test_a_write_group_lands_every_file_and_leaves_no_backup(tmp_path):
    a, b = tmp_path / "m.onnx", tmp_path / "m.json"
    a.write_text("old")
    done = io.atomic_write_group({a: lambda p: p.write_text("new model"), b: lambda p: p.write_text("new json")})
    assert done == [a, b] and (a.read_text(), b.read_text()) == ("new model", "new json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.onnx"]


def test_a_write_group_whose_writer_fails_removes_the_temps_already_written(tmp_path):
    a, b = tmp_path / "m.onnx", tmp_path / "m.json"
    a.write_text("old")

    def fails(p):
        raise OSError(errno.ENOSPC, "full")

    with pytest.raises(WriteError) as refused:
        io.atomic_write_group({a: lambda p: p.write_text("new"), b: fails})
    assert str(refused.value) == f"cannot write {b}: no space left on the device"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"] and a.read_text() == "old"


def test_make_folder_and_its_refusals(tmp_path):
    deep = tmp_path / "a" / "b" / "c"
    assert io.make_folder(deep) == deep and deep.is_dir()
    assert io.make_folder(str(deep)) == deep  # again: fine, and a str becomes a Path
    (tmp_path / "file").write_text("x")
    with pytest.raises(WriteError) as refused:
        io.make_folder(tmp_path / "file")
    assert str(refused.value) == f"cannot create folder {tmp_path / 'file'}: a file of that name exists"
    with pytest.raises(WriteError) as refused:
        io.make_folder(tmp_path / "file" / "sub")
    assert str(refused.value) == f"cannot create folder {tmp_path / 'file' / 'sub'}: a parent is not a folder"


def test_remove_partials_and_empty_folders(tmp_path):
    for name in (".a.onnx.x1.partial", ".b.json.previous.partial", "kept.partial", ".kept", "model.onnx"):
        (tmp_path / name).write_text("x")
    assert io.remove_partials(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".kept", "kept.partial", "model.onnx"]
    assert io.remove_partials(tmp_path) == 0
    target = tmp_path / "new" / "runs" / "r1"
    missing = io.missing_folders(target)
    assert missing == [target, target.parent, target.parent.parent]
    assert io.missing_folders(Path("relative-nowhere")) == [Path.cwd() / "relative-nowhere"]
    target.mkdir(parents=True)
    io.remove_empty_folders(missing)
    assert not (tmp_path / "new").exists() and tmp_path.is_dir()
    target.mkdir(parents=True)
    (target.parent / "someone-elses").write_text("x")
    assert io.missing_folders(target) == []
    io.remove_empty_folders([target, target.parent, target.parent.parent])
    assert not target.exists() and (target.parent / "someone-elses").is_file()  # stops at the first non-empty
    assert (tmp_path / "new").is_dir()


def test_the_lock_file_is_an_ordinary_file_and_may_be_removed_under_its_holder(tmp_path):
    old = os.umask(0o002)
    try:
        with FolderLock(tmp_path):
            assert stat.S_IMODE((tmp_path / FolderLock.NAME).stat().st_mode) == 0o664  # 0666 less the umask
            (tmp_path / FolderLock.NAME).unlink()  # someone cleaned up: leaving is still fine
    finally:
        os.umask(old)
    assert list(tmp_path.iterdir()) == []


def test_a_lock_file_of_garbage_bytes_still_gives_the_message(tmp_path):
    with FolderLock(tmp_path, "training"):
        (tmp_path / FolderLock.NAME).write_bytes(b"\xff\xfe12")
        with pytest.raises(EdgeascError) as refused:
            FolderLock(tmp_path, "training").__enter__()
    assert str(refused.value) == MESSAGE.format(tmp_path, "training", "\ufffd\ufffd12")


def test_a_writer_that_loses_its_temp_file_is_still_one_clean_error(tmp_path, monkeypatch):
    target = tmp_path / "logits.npy"
    with pytest.raises(WriteError) as refused:  # e.g. np.save(tmp) writes tmp + ".npy" instead
        io.atomic_write(target, lambda tmp: tmp.rename(tmp.with_name(tmp.name + ".npy")))
    assert str(refused.value) == f"cannot write {target}: no such folder"
    for left in tmp_path.iterdir():
        left.unlink()

    def vanish_then_fail(tmp):
        tmp.unlink()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        io.atomic_write(target, vanish_then_fail)
    assert list(tmp_path.iterdir()) == []

    def rename_fails_after_the_temp_went(src, dst):
        os.unlink(src)
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(io.os, "replace", rename_fails_after_the_temp_went)
    with pytest.raises(WriteError) as refused:
        io.atomic_write_text(target, "x")
    assert str(refused.value) == f"cannot write {target}: read-only file system"
    assert list(tmp_path.iterdir()) == []


def test_a_failing_rename_names_the_file_exactly(tmp_path, monkeypatch):
    def refuse(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io.os, "replace", refuse)
    with pytest.raises(WriteError) as refused:
        io.atomic_write_text(tmp_path / "summary.json", "{}")
    assert str(refused.value) == f"cannot write {tmp_path / 'summary.json'}: no space left on the device"
    with pytest.raises(WriteError) as refused:
        io.atomic_write_group({tmp_path / "m.onnx": lambda p: p.write_text("m"),
                               tmp_path / "m.json": lambda p: p.write_text("j")})
    assert str(refused.value) == f"cannot write {tmp_path / 'm.onnx'}: no space left on the device"
    assert list(tmp_path.iterdir()) == []
