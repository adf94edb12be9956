import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anatcl_core.atomic import write_atomic


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
