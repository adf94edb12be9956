"""The cohort layout: round trips, every validation rule on write and on open, interrupted writes."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anatcl_core.anatomy import CHANNELS, REGIONS
from anatcl_core.data import GRIDS, LAYOUT_VERSION, Cohort, CohortError, CohortWriter, write_cohort
from anatcl_core.data.cohort import UNFINISHED_MARKER

SMALL_SHAPE = (6, 7, 5)
SMALL_AFFINE = np.array([[-4.0, 0, 0, 90], [0, 4, 0, -126], [0, 0, 4, -72], [0, 0, 0, 1]])


def make_participants(n: int) -> pd.DataFrame:
    """n valid rows with the required columns plus a phenotype column that has gaps."""
    return pd.DataFrame({
        "participant_id": [f"sub-{i:03d}" for i in range(n)],
        "age": np.linspace(20.0, 80.0, n),
        "sex": ["M", "F"] * (n // 2) + ["M"] * (n % 2),
        "site": ["siteA"] * n,
        "diagnosis": ["control"] * n,
        "fiq": [100.0 + i if i % 2 else np.nan for i in range(n)],
    })


def make_arrays(n: int, shape=SMALL_SHAPE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """volumes [n, *shape] float32 in [0, 1) and roi [n, 7, 68] positive float32."""
    rng = np.random.default_rng(seed)
    volumes = rng.random((n, *shape), dtype=np.float32)
    roi = rng.uniform(0.1, 3000.0, size=(n, len(CHANNELS), len(REGIONS))).astype(np.float32)
    return volumes, roi


@pytest.fixture
def cohort_path(tmp_path: Path) -> Path:
    """A valid 4-subject cohort on the small grid, written as float32."""
    volumes, roi = make_arrays(4)
    write_cohort(tmp_path / "adni", make_participants(4), volumes, roi, SMALL_AFFINE, {"source": "test"},
                 dtype="float32")
    return tmp_path / "adni"


# ----------------------------------------------------------------------------- round trips

def test_round_trip_on_the_3mm_grid(tmp_path):
    shape, affine = GRIDS[3.0]
    volumes, roi = make_arrays(3, shape)
    table = make_participants(3)
    written = write_cohort(tmp_path / "openbhb", table, volumes, roi, affine, {"source": "test", "seed": np.int64(7)})
    cohort = Cohort.open(tmp_path / "openbhb")
    assert cohort.name == "openbhb" and len(cohort) == 3 and cohort.shape == shape
    np.testing.assert_array_equal(cohort.volumes, volumes.astype(np.float16))
    np.testing.assert_array_equal(cohort.roi, roi)
    np.testing.assert_array_equal(cohort.affine, affine)
    pd.testing.assert_frame_equal(cohort.participants, table, check_dtype=False)
    assert isinstance(cohort.volumes, np.memmap) and not cohort.volumes.flags.writeable
    assert cohort.roi.dtype == np.float32
    assert cohort.meta["layout_version"] == LAYOUT_VERSION
    assert cohort.meta["voxel_size_mm"] == [3.0, 3.0, 3.0]
    assert cohort.meta["channels"] == list(CHANNELS) and cohort.meta["regions"] == list(REGIONS)
    assert cohort.meta["provenance"] == {"source": "test", "seed": 7}
    assert written.path == cohort.path


def test_text_that_looks_missing_or_numeric_survives(tmp_path):
    volumes, roi = make_arrays(3)
    table = make_participants(3).assign(participant_id=["NA", "0012", "null"], site=["1", "2", "2"])
    cohort = write_cohort(tmp_path / "c", table, volumes, roi, SMALL_AFFINE, {})
    assert cohort.participants["participant_id"].tolist() == ["NA", "0012", "null"]
    assert cohort.participants["site"].tolist() == ["1", "2", "2"]
    assert cohort.participants["fiq"].isna().tolist() == [True, False, True]


@settings(max_examples=15, deadline=None)
@given(shape=st.tuples(*[st.integers(1, 6)] * 3), n=st.integers(1, 4),
       dtype=st.sampled_from(["float16", "float32"]), voxel=st.sampled_from([1.0, 1.5, 2.0, 4.0]),
       seed=st.integers(0, 2**16))
def test_round_trip_over_random_grids(shape, n, dtype, voxel, seed):
    affine = np.diag([-voxel, voxel, voxel, 1.0])
    affine[:3, 3] = [90.0, -126.0, -72.0]
    volumes, roi = make_arrays(n, shape, seed)
    with tempfile.TemporaryDirectory() as root:
        write_cohort(Path(root) / "c", make_participants(n), volumes, roi, affine, {"seed": seed}, dtype=dtype)
        cohort = Cohort.open(Path(root) / "c")
        np.testing.assert_array_equal(cohort.volumes, volumes.astype(dtype))
        np.testing.assert_array_equal(cohort.roi, roi)
        np.testing.assert_array_equal(cohort.affine, affine)
        assert cohort.volumes.dtype == np.dtype(dtype)
        pd.testing.assert_frame_equal(cohort.participants, make_participants(n), check_dtype=False)


@given(rows=st.lists(st.integers(0, 3), min_size=1, max_size=4, unique=True), chunk=st.integers(1, 5))
@settings(max_examples=25, deadline=None)
def test_mean_volume_is_the_mean_of_the_chosen_maps_whatever_the_chunk(tmp_path_factory, rows, chunk):
    volumes, roi = make_arrays(4)
    path = tmp_path_factory.mktemp("mean") / "adni"
    write_cohort(path, make_participants(4), volumes, roi, SMALL_AFFINE, {"source": "test"}, dtype="float32")
    cohort = Cohort.open(path)
    expected = volumes[sorted(rows)].astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(cohort.mean_volume(np.array(rows), chunk=chunk), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(cohort.mean_volume(), volumes.astype(np.float64).mean(axis=0), rtol=1e-6, atol=1e-7)


def test_streaming_writer_fills_rows_one_by_one(tmp_path):
    volumes, roi = make_arrays(3)
    with CohortWriter(tmp_path / "c", 3, SMALL_SHAPE, SMALL_AFFINE, dtype="float32") as writer:
        assert writer.volumes.shape == (3, *SMALL_SHAPE)
        assert not (tmp_path / "c").exists()     # nothing at the target until finish
        for i in range(3):
            writer.volumes[i] = volumes[i]
        cohort = writer.finish(make_participants(3), roi, {"recipe": "test"})
    np.testing.assert_array_equal(cohort.volumes, volumes)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]   # temporary folder gone
    assert not (tmp_path / "c" / UNFINISHED_MARKER).exists()


def test_overwrite_is_explicit(cohort_path):
    volumes, roi = make_arrays(2, seed=5)
    with pytest.raises(CohortError, match=r"adni: already exists.*overwrite=True"):
        write_cohort(cohort_path, make_participants(2), volumes, roi, SMALL_AFFINE, {})
    assert len(Cohort.open(cohort_path)) == 4
    write_cohort(cohort_path, make_participants(2), volumes, roi, SMALL_AFFINE, {}, overwrite=True)
    assert len(Cohort.open(cohort_path)) == 2
    assert sorted(p.name for p in cohort_path.parent.iterdir()) == ["adni"]


# ----------------------------------------------------------------------------- refused on write

def _write(tmp_path, table=None, volumes=None, roi=None, affine=SMALL_AFFINE, dtype="float32", provenance=None):
    base_volumes, base_roi = make_arrays(4)
    return write_cohort(tmp_path / "adni", make_participants(4) if table is None else table,
                        base_volumes if volumes is None else volumes, base_roi if roi is None else roi,
                        affine, provenance or {}, dtype=dtype)


@pytest.mark.parametrize("edit, pattern", [
    (lambda t: t.drop(columns="sex"), r"participants\.tsv: missing column\(s\) \['sex'\]"),
    (lambda t: t.assign(age=["n/a", 30, "x", 40]), r"participants\.tsv: column 'age' has 2 non-numeric.*rows 0"),
    (lambda t: t.assign(age=[20, np.inf, 30, 40]), r"participants\.tsv: column 'age'.*expected age at scan in years"),
    (lambda t: t.assign(sex=["M", "male", "F", "F"]), r"participants\.tsv: column 'sex'.*'male'.*'M' or 'F'"),
    (lambda t: t.assign(participant_id=["a", "b", "a", "c"]), r"participants\.tsv: column 'participant_id' has repeat"),
    (lambda t: t.assign(participant_id=["a", " ", "b", "c"]), r"participants\.tsv: column 'participant_id' is empty"),
    (lambda t: t.assign(diagnosis=["control", None, "ad", "ad"]), r"participants\.tsv: column 'diagnosis' is empty"),
    (lambda t: t.iloc[:3], r"participants\.tsv: 3 rows but vbm\.npy holds 4 subjects"),
])
def test_bad_participants_are_refused_on_write(tmp_path, edit, pattern):
    with pytest.raises(CohortError, match=pattern):
        _write(tmp_path, table=edit(make_participants(4)))
    assert list(tmp_path.iterdir()) == []     # nothing left behind


def test_bad_roi_is_refused_on_write(tmp_path):
    _, roi = make_arrays(4)
    with pytest.raises(CohortError, match=r"desikan_roi\.npy: array shape \[4, 7, 67\]; expected .*\[4, 7, 68\]"):
        _write(tmp_path, roi=roi[:, :, :67])
    with pytest.raises(CohortError, match=r"desikan_roi\.npy: array shape \[3, 7, 68\]"):
        _write(tmp_path, roi=roi[:3])
    roi[2, 4, 10] = np.nan
    with pytest.raises(CohortError, match=r"desikan_roi\.npy: 1 subject\(s\) have NaN.*rows 2"):
        _write(tmp_path, roi=roi)
    with pytest.raises(CohortError, match=r"desikan_roi\.npy: dtype int64; expected float32"):
        _write(tmp_path, roi=np.ones((4, 7, 68), dtype=np.int64))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")
def test_bad_volumes_are_refused_on_write(tmp_path):
    volumes, _ = make_arrays(4)
    volumes[1, 0, 0, 0] = 1e6     # beyond float16 range: would silently become inf
    with pytest.raises(CohortError, match=r"vbm\.npy: 1 volume\(s\) hold NaN or inf \(sub-001\).*float16"):
        _write(tmp_path, volumes=volumes, dtype="float16")
    with pytest.raises(CohortError, match=r"field 'dtype' is float64; expected one of"):
        _write(tmp_path, dtype="float64")
    with pytest.raises(CohortError, match=r"vbm\.npy: array shape \[6, 7, 5\]; expected \[N, X, Y, Z\]"):
        _write(tmp_path, volumes=volumes[0])
    assert list(tmp_path.iterdir()) == []


def test_bad_grids_are_refused_on_write(tmp_path):
    rotated = SMALL_AFFINE.copy()
    rotated[0, 1] = 0.5
    with pytest.raises(CohortError, match=r"adni \(CohortWriter\): field 'affine' is not axis-aligned"):
        _write(tmp_path, affine=rotated)
    with pytest.raises(CohortError, match=r"field 'affine' has shape \[3, 3\]"):
        _write(tmp_path, affine=np.eye(3))
    shape, affine = GRIDS[3.0]
    flipped = affine.copy()
    flipped[0, 0] = 3.0     # left-right flip of the CAT12 3 mm grid
    with pytest.raises(CohortError, match=r"field 'affine'.*3\.0 mm CAT12 grid.*flipped axis"):
        _write(tmp_path, volumes=np.zeros((4, *shape), np.float32), affine=flipped)
    assert list(tmp_path.iterdir()) == []


def test_provenance_must_be_json(tmp_path):
    with pytest.raises(CohortError, match=r"meta\.json: field 'provenance' cannot be stored"):
        _write(tmp_path, provenance={"model": object()})
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- refused on open

def _edit_meta(path: Path, **changes) -> None:
    meta = json.loads((path / "meta.json").read_text())
    meta.update(changes)
    (path / "meta.json").write_text(json.dumps(meta))


def _edit_table(path: Path, edit) -> None:
    table = pd.read_csv(path / "participants.tsv", sep="\t", dtype=str, keep_default_na=False)
    edit(table).to_csv(path / "participants.tsv", sep="\t", index=False)


@pytest.mark.parametrize("name", ["participants.tsv", "vbm.npy", "desikan_roi.npy", "meta.json"])
def test_missing_file_is_refused(cohort_path, name):
    (cohort_path / name).unlink()
    with pytest.raises(CohortError, match=rf"adni: missing file\(s\) \['{name}'\]"):
        Cohort.open(cohort_path)


@pytest.mark.parametrize("changes, pattern", [
    ({"layout_version": 99}, r"meta\.json: field 'layout_version' is 99; expected one of \[1\]"),
    ({"channels": list(CHANNELS)[::-1]}, r"meta\.json: field 'channels'.*expected exactly"),
    ({"regions": [r.replace("lh-", "L_") for r in REGIONS]}, r"meta\.json: field 'regions' differs"),
    ({"shape": [6, 7, 6]}, r"vbm\.npy: array shape \[4, 6, 7, 5\]; expected .* \[4, 6, 7, 6\]"),
    ({"n_subjects": 5}, r"vbm\.npy: array shape \[4, 6, 7, 5\]; expected .* \[5, 6, 7, 5\]"),
    ({"dtype": "float16"}, r"vbm\.npy: dtype float32; expected float16"),
    ({"voxel_size_mm": [1.5, 1.5, 1.5]}, r"meta\.json: field 'voxel_size_mm' is \[1\.5, 1\.5, 1\.5\]"),
    ({"affine": np.diag([1.0, 1, 1]).tolist()}, r"meta\.json: field 'affine' has shape \[3, 3\]"),
    ({"provenance": "x"}, r"meta\.json: field 'provenance' is str"),
])
def test_inconsistent_meta_is_refused(cohort_path, changes, pattern):
    _edit_meta(cohort_path, **changes)
    with pytest.raises(CohortError, match=pattern):
        Cohort.open(cohort_path)


def test_meta_without_a_field_or_not_json_is_refused(cohort_path):
    meta = json.loads((cohort_path / "meta.json").read_text())
    del meta["affine"]
    (cohort_path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CohortError, match=r"meta\.json: missing field\(s\) \['affine'\]"):
        Cohort.open(cohort_path)
    (cohort_path / "meta.json").write_text("{not json")
    with pytest.raises(CohortError, match=r"meta\.json: not valid JSON"):
        Cohort.open(cohort_path)


@pytest.mark.parametrize("edit, pattern", [
    (lambda t: t.iloc[:3], r"participants\.tsv: 3 rows but vbm\.npy holds 4 subjects"),
    (lambda t: t.assign(age=["20", "thirty", "40", ""]), r"participants\.tsv: column 'age' has 2 non-numeric"),
    (lambda t: t.assign(sex=["M", "F", "m", "F"]), r"participants\.tsv: column 'sex' has 1 values outside"),
    (lambda t: t.drop(columns="site"), r"participants\.tsv: missing column\(s\) \['site'\]"),
    (lambda t: t.assign(participant_id=["a", "a", "b", "c"]), r"participants\.tsv: column 'participant_id' has rep"),
])
def test_bad_participants_are_refused_on_open(cohort_path, edit, pattern):
    _edit_table(cohort_path, edit)
    with pytest.raises(CohortError, match=pattern):
        Cohort.open(cohort_path)


def test_bad_arrays_are_refused_on_open(cohort_path):
    roi = np.load(cohort_path / "desikan_roi.npy")
    roi[0, 0, 0] = np.nan
    np.save(cohort_path / "desikan_roi.npy", roi)
    with pytest.raises(CohortError, match=r"desikan_roi\.npy: 1 subject\(s\) have NaN"):
        Cohort.open(cohort_path)
    np.save(cohort_path / "desikan_roi.npy", roi[:3])
    with pytest.raises(CohortError, match=r"desikan_roi\.npy: array shape \[3, 7, 68\]"):
        Cohort.open(cohort_path)
    data = (cohort_path / "vbm.npy").read_bytes()
    (cohort_path / "vbm.npy").write_bytes(data[: len(data) // 2])     # truncated copy
    with pytest.raises(CohortError, match=r"vbm\.npy: not a readable \.npy array"):
        Cohort.open(cohort_path)


def test_not_a_folder_is_refused(tmp_path):
    with pytest.raises(CohortError, match=r"nowhere: not a folder"):
        Cohort.open(tmp_path / "nowhere")


# ----------------------------------------------------------------------------- interrupted writes

@pytest.mark.parametrize("interruption", [RuntimeError, KeyboardInterrupt])
def test_leaving_the_block_without_finish_removes_everything(tmp_path, interruption):
    with pytest.raises(interruption):
        with CohortWriter(tmp_path / "c", 2, SMALL_SHAPE, SMALL_AFFINE) as writer:
            writer.volumes[0] = 1.0
            raise interruption()
    assert list(tmp_path.iterdir()) == []


def test_failure_inside_finish_removes_everything(tmp_path):
    volumes, roi = make_arrays(2)
    with pytest.raises(CohortError):
        with CohortWriter(tmp_path / "c", 2, SMALL_SHAPE, SMALL_AFFINE) as writer:
            writer.volumes[:] = volumes
            writer.finish(make_participants(3), roi, {})
    assert list(tmp_path.iterdir()) == []


def test_killed_writer_leaves_nothing_that_opens(tmp_path, monkeypatch):
    """A kill cannot run cleanup: emulate it by disabling abort, and stop at the last moment."""
    volumes, roi = make_arrays(2)
    monkeypatch.setattr(CohortWriter, "abort", lambda self: None)
    unlink = Path.unlink

    def killed_before_marker_removal(self, *args, **kwargs):
        if self.name == UNFINISHED_MARKER:
            raise SystemExit("killed")
        return unlink(self, *args, **kwargs)

    # killed while the volumes are being filled: only the hidden temporary folder exists
    writer = CohortWriter(tmp_path / "c", 2, SMALL_SHAPE, SMALL_AFFINE)
    writer.volumes[0] = volumes[0]
    leftovers = [p for p in tmp_path.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".c.partial-")
    for folder in (tmp_path / "c", leftovers[0]):
        with pytest.raises(CohortError, match=r"not a folder|never finished"):
            Cohort.open(folder)

    # killed after the rename but before the marker is removed: the target refuses to open
    monkeypatch.setattr(Path, "unlink", killed_before_marker_removal)
    with pytest.raises(SystemExit):
        with CohortWriter(tmp_path / "d", 2, SMALL_SHAPE, SMALL_AFFINE) as writer:
            writer.volumes[:] = volumes
            writer.finish(make_participants(2), roi, {})
    monkeypatch.undo()
    assert (tmp_path / "d" / "meta.json").exists()
    with pytest.raises(CohortError, match=r"d: holds \.unfinished.*never finished"):
        Cohort.open(tmp_path / "d")
