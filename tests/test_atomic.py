import os
import stat
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anatcl_core.atomic import Owner, read_owner, write_atomic, write_owner


@settings(max_examples=30, deadline=None)
@given(first=st.binary(max_size=4096), second=st.binary(max_size=4096))
def test_round_trip_and_overwrite(tmp_path_factory, first, second):
    path = tmp_path_factory.mktemp("atomic") / "sub" / "file.bin"
    assert write_atomic(path, lambda f: f.write(first)) == path
    assert path.read_bytes() == first
    write_atomic(path, lambda f: f.write(second))
    assert path.read_bytes() == second
    assert [p.name for p in path.parent.iterdir()] == ["file.bin"]


def test_a_failing_writer_leaves_the_previous_file_and_no_temporary(tmp_path):
    path = tmp_path / "table.csv"
    path.write_bytes(b"old\n")

    def half_then_fail(f):
        f.write(b"new, but only ha")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, half_then_fail)
    assert path.read_bytes() == b"old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


# ----------------------------------------------------------------------------- owner markers

def _dead_pid() -> int:
    """The pid of a process that has already exited (reuse within the test is vanishingly unlikely)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_owner_marker_round_trip_names_this_live_process(tmp_path):
    marker = tmp_path / ".unfinished"
    write_owner(marker)
    assert marker.read_text() == f"{os.getpid()} {socket.gethostname()}\n"
    owner = read_owner(marker)
    assert owner == Owner(os.getpid(), socket.gethostname()) and not owner.gone()
    with pytest.raises(FileExistsError):      # exclusive: a second writer never takes over a marker
        write_owner(marker)
    assert read_owner(marker) == owner


@pytest.mark.parametrize("text", ["", "\n", "1234", "1234 host extra", "abc host", b"\xff\xfe 12"])
def test_an_unreadable_or_garbled_marker_reads_as_none(tmp_path, text):
    marker = tmp_path / "lock"
    marker.write_bytes(text if isinstance(text, bytes) else text.encode())
    assert read_owner(marker) is None
    assert read_owner(tmp_path / "absent") is None


def test_a_dead_process_on_this_host_is_gone_but_not_on_another_host(tmp_path):
    pid = _dead_pid()
    marker = tmp_path / "lock"
    marker.write_text(f"{pid} {socket.gethostname()}\n")
    assert read_owner(marker) == Owner(pid, socket.gethostname()) and read_owner(marker).gone()
    marker.write_text(f"{pid} elsewhere.example\n")          # cannot be checked from here: may be alive
    assert not read_owner(marker).gone()


def test_stale_temporaries_are_removed_and_fresh_ones_and_other_files_kept(tmp_path):
    import time

    from anatcl_core.atomic import STALE_TEMPORARY_S, remove_stale_files
    stale, fresh, other = tmp_path / ".a.npy.x1.tmp", tmp_path / ".a.npy.x2.tmp", tmp_path / ".b.npy.x3.tmp"
    kept = [tmp_path / "a.npy", tmp_path / ".hidden", tmp_path / "old.tmp"]        # not write_atomic's names
    for path in (stale, fresh, other, *kept):
        path.write_bytes(b"x")
    old = time.time() - STALE_TEMPORARY_S - 1
    for path in (stale, other, *kept):
        os.utime(path, (old, old))
    assert remove_stale_files(tmp_path, ".a.npy.*.tmp") == [stale]
    assert remove_stale_files(tmp_path) == [other]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fresh.name] + [p.name for p in kept])
    assert remove_stale_files(tmp_path / "missing") == []


def test_a_link_is_written_through_and_a_device_pipe_or_folder_is_never_replaced(tmp_path):
    real, link = tmp_path / "real.csv", tmp_path / "link.csv"
    real.write_text("old")
    link.symlink_to(real)
    assert write_atomic(link, lambda f: f.write(b"new")) == link
    assert link.is_symlink() and real.read_text() == "new"        # the link stays, its target is replaced
    fifo, folder = tmp_path / "pipe", tmp_path / "folder"
    os.mkfifo(fifo)
    folder.mkdir()
    for path in (fifo, folder, Path(os.devnull)):
        with pytest.raises(ValueError, match="not a regular file; refusing to replace it"):
            write_atomic(path, lambda f: f.write(b"x"))
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and folder.is_dir() and stat.S_ISCHR(os.stat(os.devnull).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "link.csv", "pipe", "real.csv"]  # no temporaries
