"""Importers: OpenBHB folder trees, CAT12 NIfTI maps, FreeSurfer aparc.stats and ENIGMA tables.

Fixtures are written in the real file layouts and column names, on tiny grids for speed and once
on the real 121 x 145 x 121 CAT12 grid.
"""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import anatcl_core.data as data_package
from anatcl_core.anatomy import CHANNELS, REGIONS
from anatcl_core.cli import main as anatcl
from anatcl_core.data import GRIDS, Cohort, CohortError
from anatcl_core.data.importers import (
    APARC_COLUMNS, SourceDataError, freesurfer_measures, import_nifti, import_openbhb, load_gm_map,
    read_enigma_tables, read_table, to_grid,
)

# A 15 mm grid over the CAT12 field of view (x 90 .. -90, y -126 .. 84, z -72 .. 108), oriented like CAT12.
TINY = ((13, 15, 13), np.array([[-15.0, 0, 0, 90], [0, 15, 0, -126], [0, 0, 15, -72], [0, 0, 0, 1]]))
# Another MNI resolution over the same box, stored the other way round along x (RAS): needs resampling.
TINY_RAS_10MM = ((19, 22, 19), np.array([[10.0, 0, 0, -90], [0, 10, 0, -126], [0, 0, 10, -72], [0, 0, 0, 1]]))
THICKNESS = CHANNELS.index("average_thickness_mm")
AREA = CHANNELS.index("surface_area_mm^2")
VOLUME = CHANNELS.index("gray_matter_volume_mm^3")
ENIGMA_XDATA = Path(data_package.__file__).parent / "enigma" / "xdata"


# ----------------------------------------------------------------------------- OpenBHB fixture

def subject_volume(number: int, shape) -> np.ndarray:
    """Distinct, position-dependent values: any transpose or reshape of the voxels would show."""
    return (np.arange(np.prod(shape), dtype=np.float32).reshape(shape) % 1000 / 1000 + number).astype(np.float32)


def subject_roi(number: int) -> np.ndarray:
    """[7, 68] values encoding (subject, channel, region)."""
    channel, region = np.meshgrid(np.arange(7), np.arange(68), indexing="ij")
    return (number * 10000 + channel * 100 + region).astype(np.float32)


def make_openbhb(root: Path, subjects: dict[int, str], shape=TINY[0], leading_axis: bool = True,
                 skip: tuple[int, ...] = (), sex=None) -> Path:
    """An OpenBHB download: participants.tsv and {train,val}/derivatives/sub-<id>/ses-1/ arrays."""
    root.mkdir(parents=True)
    ids = list(subjects)
    splits = list(subjects.values())
    pd.DataFrame({
        "participant_id": ids,
        "study": ["1"] * len(ids),
        "sex": sex or ["male", "female"] * (len(ids) // 2) + ["male"] * (len(ids) % 2),
        "age": [20.5 + i for i in range(len(ids))],
        "site": [17] * len(ids),
        "diagnosis": ["control"] * len(ids),
        "tiv": [1500.0] * len(ids),
        "magnetic_field_strength": [3.0] * len(ids),
        "siteXacq": [42] * len(ids),
        "split": splits,
    }).to_csv(root / "participants.tsv", sep="\t", index=False)
    for number, split in subjects.items():
        if number in skip:
            continue
        folder = root / ("train" if split == "train" else "val") / "derivatives" / f"sub-{number}" / "ses-1"
        folder.mkdir(parents=True)
        volume, roi = subject_volume(number, shape), subject_roi(number)
        np.save(folder / f"sub-{number}_preproc-cat12vbm_desc-gm_T1w.npy", volume[None] if leading_axis else volume)
        np.save(folder / f"sub-{number}_preproc-freesurfer_desc-desikan_ROI.npy", roi[None] if leading_axis else roi)
    return root


SPLITS = {1001: "train", 1002: "internal_test", 1003: "train", 1004: "external_test"}


def test_openbhb_round_trip_keeps_voxels_rows_and_split(tmp_path):
    src = make_openbhb(tmp_path / "openbhb_src", SPLITS)
    cohort = import_openbhb(src, tmp_path / "data" / "openbhb", grid=TINY, source_grid=TINY, dtype="float32",
                            progress=False)
    table = cohort.participants
    assert table["participant_id"].tolist() == ["1001", "1002", "1003", "1004"]
    assert table["split"].tolist() == ["train", "internal_test", "train", "external_test"]
    assert table["sex"].tolist() == ["M", "F", "M", "F"]
    assert set(table["diagnosis"]) == {"control"} and set(table["site"]) == {"17"}
    assert table.columns[:6].tolist() == ["participant_id", "age", "sex", "site", "diagnosis", "split"]
    assert {"study", "tiv", "siteXacq"} <= set(table.columns)
    for i, number in enumerate(SPLITS):
        np.testing.assert_array_equal(cohort.volumes[i], subject_volume(number, TINY[0]))
        np.testing.assert_array_equal(cohort.roi[i], subject_roi(number))
    assert cohort.meta["provenance"]["source"] == "OpenBHB"


@pytest.mark.parametrize("leading_axis", [True, False])
def test_openbhb_on_the_real_cat12_grid(tmp_path, leading_axis):
    shape, affine = GRIDS[1.5]
    src = make_openbhb(tmp_path / "src", {7: "train", 8: "internal_test"}, shape=shape, leading_axis=leading_axis)
    cohort = import_openbhb(src, tmp_path / "openbhb", progress=False)
    assert cohort.shape == (121, 145, 121) and cohort.volumes.dtype == np.float16
    np.testing.assert_array_equal(cohort.affine, affine)
    np.testing.assert_array_equal(cohort.volumes[1], subject_volume(8, shape).astype(np.float16))
    np.testing.assert_array_equal(cohort.roi[0], subject_roi(7))


def test_openbhb_incomplete_subjects_are_listed_or_dropped(tmp_path, capsys):
    src = make_openbhb(tmp_path / "src", SPLITS, skip=(1003,))
    with pytest.raises(SourceDataError, match=r"1 subject\(s\) incomplete: 1003 \(no VBM map, no Desikan ROI array\)"
                                              r".*--drop-incomplete"):
        import_openbhb(src, tmp_path / "c", grid=TINY, source_grid=TINY, progress=False)
    cohort = import_openbhb(src, tmp_path / "c", grid=TINY, source_grid=TINY, drop_incomplete=True, progress=False)
    assert cohort.participants["participant_id"].tolist() == ["1001", "1002", "1004"]
    assert cohort.meta["provenance"]["dropped"] == {"1003": ["no VBM map", "no Desikan ROI array"]}
    assert "1003: no VBM map" in capsys.readouterr().err


def test_openbhb_refuses_misplaced_or_misshapen_data(tmp_path):
    src = make_openbhb(tmp_path / "src", SPLITS)
    table = pd.read_csv(src / "participants.tsv", sep="\t")
    table.loc[0, "split"] = "external_test"     # 1001 lives in train/
    table.to_csv(src / "participants.tsv", sep="\t", index=False)
    with pytest.raises(SourceDataError, match=r"participants\.tsv: column 'split' disagrees.*1001"):
        import_openbhb(src, tmp_path / "c", grid=TINY, source_grid=TINY, progress=False)

    src = make_openbhb(tmp_path / "src2", SPLITS)
    bad = next(src.glob("train/derivatives/sub-1003/ses-1/*T1w.npy"))
    np.save(bad, np.zeros((1, 13, 13, 15), np.float32))     # axes in the wrong order
    with pytest.raises(SourceDataError, match=r"sub-1003_preproc-cat12vbm_desc-gm_T1w\.npy: array shape "
                                              r"\[13, 13, 15\]; expected \[13, 15, 13\]"):
        import_openbhb(src, tmp_path / "c", grid=TINY, source_grid=TINY, progress=False)

    src = make_openbhb(tmp_path / "src3", SPLITS)
    (src / "participants.tsv").unlink()
    (src / "participants.tsv").mkdir()                          # there, but not a table: named, not "missing"
    with pytest.raises(SourceDataError, match=r"participants\.tsv: is a folder; expected the participants table"):
        import_openbhb(src, tmp_path / "c", grid=TINY, source_grid=TINY, progress=False, check_resources=False)
    assert not (tmp_path / "c").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["src", "src2", "src3"]


def test_openbhb_refuses_unknown_codes_and_channel_orders(tmp_path):
    src = make_openbhb(tmp_path / "src", SPLITS, sex=["male", "female", "other", "male"])
    with pytest.raises(SourceDataError, match=r"participants\.tsv: column 'sex' has values \['other'\]"):
        import_openbhb(src, tmp_path / "c", grid=TINY, source_grid=TINY, progress=False)

    src = make_openbhb(tmp_path / "src2", SPLITS)
    (src / "resource").mkdir()
    (src / "resource" / "freesurfer_channels.txt").write_text("\n".join(reversed(CHANNELS)) + "\n")
    with pytest.raises(SourceDataError, match=r"freesurfer_channels\.txt: channels .*expected"):
        import_openbhb(src, tmp_path / "c", grid=TINY, source_grid=TINY, progress=False)
    (src / "resource" / "freesurfer_channels.txt").write_text("\n".join(CHANNELS) + "\n")
    assert len(import_openbhb(src, tmp_path / "c", grid=TINY, source_grid=TINY, progress=False)) == 4


# ----------------------------------------------------------------------------- NIfTI maps

def world_coordinates(shape, affine) -> np.ndarray:
    """[*shape, 3] mm coordinates of every voxel centre."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def blob(shape, affine, centre_mm, sigma_mm=12.0) -> np.ndarray:
    """A Gaussian blob at centre_mm (world coordinates) on the given grid."""
    distance2 = ((world_coordinates(shape, affine) - np.asarray(centre_mm)) ** 2).sum(-1)
    return np.exp(-distance2 / (2 * sigma_mm**2)).astype(np.float32)


def save_nifti(path: Path, volume: np.ndarray, affine: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(volume, affine), str(path))
    return path


def peak_mm(volume: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return affine[:3, :3] @ np.array(np.unravel_index(np.argmax(volume), volume.shape)) + affine[:3, 3]


LEFT_BLOB = (-45.0, -21.0, 33.0)     # left hemisphere: negative x in MNI (RAS+) coordinates


@pytest.mark.parametrize("source_grid", [TINY, TINY_RAS_10MM], ids=["on-grid", "ras-10mm-resampled"])
def test_left_stays_left(tmp_path, source_grid):
    shape, affine = source_grid
    path = save_nifti(tmp_path / "mwp1sub-01_T1w.nii.gz", blob(shape, affine, LEFT_BLOB), affine)
    volume, resampled = load_gm_map(path, TINY)
    assert resampled == (source_grid is not TINY)
    peak = peak_mm(volume, TINY[1])
    assert np.abs(peak - LEFT_BLOB).max() <= 15.0     # within one voxel of the tiny grid
    mirrored = np.round(np.linalg.inv(TINY[1]) @ np.array([45.0, -21.0, 33.0, 1.0])).astype(int)[:3]
    assert volume[tuple(mirrored)] < 0.05 * volume.max()


def test_resampling_to_the_real_grid_from_2mm_mni(tmp_path):
    mni_2mm = np.array([[-2.0, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])    # FSL MNI152 2 mm
    path = save_nifti(tmp_path / "mwp1x.nii", blob((91, 109, 91), mni_2mm, LEFT_BLOB, sigma_mm=6.0), mni_2mm)
    volume, resampled = load_gm_map(path, GRIDS[1.5])
    assert resampled and volume.shape == (121, 145, 121) and volume.min() >= 0
    assert np.abs(peak_mm(volume, GRIDS[1.5][1]) - LEFT_BLOB).max() <= 1.5


def test_on_grid_images_are_copied_exactly(tmp_path):
    values = np.random.default_rng(0).random(TINY[0], dtype=np.float32)
    path = save_nifti(tmp_path / "mwp1a.nii", values, TINY[1])
    volume, resampled = load_gm_map(path, TINY)
    assert not resampled
    np.testing.assert_array_equal(volume, values)
    np.testing.assert_array_equal(to_grid(values, TINY[1], TINY), values)


@settings(max_examples=20, deadline=None)
@given(axes=st.permutations([0, 1, 2]), flips=st.tuples(st.booleans(), st.booleans(), st.booleans()))
def test_any_storage_orientation_resamples_back_to_the_grid(axes, flips):
    """The same image stored with axes permuted and/or flipped (affine updated to match) lands on the
    grid voxel for voxel: orientation is read from the affine, never assumed."""
    values = np.random.default_rng(1).random(TINY[0], dtype=np.float32) + 0.5
    orientation = np.array([[axis, -1 if flip else 1] for axis, flip in zip(axes, flips)], dtype=float)
    stored = nib.orientations.apply_orientation(values, orientation)
    stored_affine = TINY[1] @ nib.orientations.inv_ornt_aff(orientation, values.shape)
    np.testing.assert_allclose(to_grid(stored, stored_affine, TINY), values, atol=1e-4)


def test_bad_images_are_refused(tmp_path):
    shape, affine = TINY
    four_d = save_nifti(tmp_path / "mwp1four.nii.gz", np.ones((*shape, 2), np.float32), affine)
    with pytest.raises(SourceDataError, match=r"mwp1four\.nii\.gz: image shape \[13, 15, 13, 2\] has 4 dim"):
        load_gm_map(four_d, TINY)
    # scanner space with the voxel origin at a corner, as many converters write it (centre ~ (126, 126, 86) mm)
    native = save_nifti(tmp_path / "mwp1native.nii", np.ones((64, 64, 44), np.float32), np.diag([4.0, 4, 4, 1]))
    with pytest.raises(SourceDataError, match=r"mwp1native\.nii: field 'affine' puts the image centre at .*native"):
        load_gm_map(native, TINY)
    empty = save_nifti(tmp_path / "mwp1empty.nii", np.zeros(shape, np.float32), affine)
    with pytest.raises(SourceDataError, match=r"mwp1empty\.nii: every voxel is zero"):
        load_gm_map(empty, TINY)
    poisoned = np.ones(shape, np.float32)
    poisoned[3, 4, 5] = np.nan
    with pytest.raises(SourceDataError, match=r"mwp1nan\.nii: voxel values include 1 NaN/inf"):
        load_gm_map(save_nifti(tmp_path / "mwp1nan.nii", poisoned, affine), TINY)
    squeezable = save_nifti(tmp_path / "mwp1one.nii", np.ones((*shape, 1), np.float32), affine)
    assert load_gm_map(squeezable, TINY)[0].shape == shape


# ----------------------------------------------------------------------------- FreeSurfer aparc.stats

APARC_HEADER = """# Table of FreeSurfer cortical parcellation anatomical statistics
#
# CreationTime 2021/03/02-22:05:09-GMT
# generating_program mris_anatomical_stats
# cmdline mris_anatomical_stats -th3 -mgz -cortex ../label/{hemi}.cortex.label -f ../stats/{hemi}.aparc.stats -b -a ../label/{hemi}.aparc.annot -c ../label/aparc.annot.ctab {subject} {hemi} white
# subjectname {subject}
# hemi {hemi}
# AnnotationFile ../label/{hemi}.aparc.annot
# Measure Cortex, NumVert, Number of Vertices, 131523, unitless
# Measure Cortex, WhiteSurfArea, White Surface Total Area, 91745.6, mm^2
# Measure Cortex, MeanThickness, Mean Thickness, 2.52437, mm
# NTableCols 10
# TableCol  1 ColHeader StructName
# TableCol  1 FieldName Structure Name
# TableCol  1 Units     NA
# ColHeaders StructName NumVert SurfArea GrayVol ThickAvg ThickStd MeanCurv GausCurv FoldInd CurvInd
"""


def aparc_row(region: str, index: int, offset: float) -> str:
    """One table row whose values encode the region index (and the hemisphere through offset)."""
    return (f"{region:<40} {5000 + index:6d} {1000 + index + offset:6.0f} {3000 + index + offset:6.0f} "
            f"{2.0 + index / 100 + offset / 1000:5.3f} {0.5 + index / 1000:5.3f} {0.1 + index / 1000:9.3f} "
            f"{0.02 + index / 10000:9.4f} {99:8d} {1 + index / 10:6.1f}")


def write_freesurfer_subject(fs_dir: Path, subject: str, drop_region: str | None = None) -> Path:
    stats = fs_dir / subject / "stats"
    stats.mkdir(parents=True)
    names = [r[3:] for r in REGIONS[:34]]
    for hemi, offset in (("lh", 0.0), ("rh", 500.0)):
        order = names if hemi == "lh" else names[::-1]     # rows are matched by name, not position
        rows = [aparc_row(n, names.index(n), offset) for n in order if n != drop_region]
        text = APARC_HEADER.format(hemi=hemi, subject=subject) + "\n".join(rows) + "\n"
        (stats / f"{hemi}.aparc.stats").write_text(text)
    return stats


def test_aparc_stats_map_to_the_openbhb_channels(tmp_path):
    roi = freesurfer_measures(write_freesurfer_subject(tmp_path, "sub-01"))
    assert roi.shape == (7, 68) and roi.dtype == np.float32
    assert list(APARC_COLUMNS) == list(CHANNELS)
    insula_lh, insula_rh = REGIONS.index("lh-insula"), REGIONS.index("rh-insula")
    assert roi[AREA, insula_lh] == 1033 and roi[AREA, insula_rh] == 1533
    assert roi[VOLUME, 0] == 3000 and roi[VOLUME, 34] == 3500
    assert roi[THICKNESS, insula_lh] == pytest.approx(2.33) and roi[THICKNESS, insula_rh] == pytest.approx(2.83)
    assert roi[CHANNELS.index("thickness_stddev_mm"), 1] == pytest.approx(0.501)
    assert roi[CHANNELS.index("integrated_rectified_mean_curvature_mm^-1"), 2] == pytest.approx(0.102)
    assert roi[CHANNELS.index("integrated_rectified_gaussian_curvature_mm^-2"), 3] == pytest.approx(0.0203)
    assert roi[CHANNELS.index("intrinsic_curvature_index"), 4] == pytest.approx(1.4)    # CurvInd, not FoldInd


def test_aparc_stats_missing_region_is_refused(tmp_path):
    stats = write_freesurfer_subject(tmp_path, "sub-01", drop_region="temporalpole")
    with pytest.raises(SourceDataError, match=r"lh\.aparc\.stats: field 'StructName' lacks Desikan region\(s\) "
                                              r"\['temporalpole'\]"):
        freesurfer_measures(stats)


# ----------------------------------------------------------------------------- ENIGMA tables

def test_enigma_tables_from_the_real_files(tmp_path):
    thickness_csv, area_csv = ENIGMA_XDATA / "metr2_CortThick.csv", ENIGMA_XDATA / "metr3_CortSurf.csv"
    with pytest.raises(SourceDataError, match=r"no column for channel\(s\) \['gray_matter_volume_mm\^3'.*"
                                              r"--fill-missing-channels zero"):
        read_enigma_tables([thickness_csv, area_csv])
    measures = read_enigma_tables([thickness_csv, area_csv], fill_missing_channels="zero")
    raw_thickness, raw_area = pd.read_csv(thickness_csv), pd.read_csv(area_csv)
    assert len(measures) == 20
    subject = raw_thickness["SubjID"][0]
    roi = measures[subject]
    assert roi[THICKNESS, REGIONS.index("lh-bankssts")] == pytest.approx(raw_thickness["L_bankssts_thickavg"][0])
    assert roi[THICKNESS, REGIONS.index("rh-insula")] == pytest.approx(raw_thickness["R_insula_thickavg"][0])
    area_row = raw_area.set_index("SubjID").loc[subject]
    assert roi[AREA, REGIONS.index("rh-frontalpole")] == pytest.approx(area_row["R_frontalpole_surfavg"])
    assert (roi[VOLUME] == 0).all() and np.isfinite(roi).all()


def test_enigma_table_with_a_missing_region_or_value_is_refused(tmp_path):
    table = pd.read_csv(ENIGMA_XDATA / "metr2_CortThick.csv")
    table.drop(columns="R_insula_thickavg").to_csv(tmp_path / "thick.csv", index=False)
    with pytest.raises(SourceDataError, match=r"thick\.csv: missing column\(s\) \['R_insula_thickavg'\]"):
        read_enigma_tables([tmp_path / "thick.csv"], fill_missing_channels="zero")
    table.loc[2, "L_cuneus_thickavg"] = np.nan
    table.to_csv(tmp_path / "thick.csv", index=False)
    with pytest.raises(SourceDataError, match=rf"thick\.csv: non-numeric or missing 'thickavg' values for SubjID "
                                              rf"\['{table['SubjID'][2]}'\]"):
        read_enigma_tables([tmp_path / "thick.csv"], fill_missing_channels="zero")


def test_enigma_tables_in_utf16_read_alike_and_a_pipe_or_folder_is_refused_not_waited_on(tmp_path):
    import os
    thickness_csv = ENIGMA_XDATA / "metr2_CortThick.csv"
    wide = tmp_path / "thick.txt"                               # UTF-16, another suffix: still comma-separated
    wide.write_bytes(thickness_csv.read_text(encoding="utf-8").encode("utf-16"))
    plain, utf16 = (read_enigma_tables([path], fill_missing_channels="zero") for path in (thickness_csv, wide))
    assert list(plain) == list(utf16) and all(np.array_equal(plain[k], utf16[k]) for k in plain)
    os.mkfifo(tmp_path / "pipe.csv")
    for path, message in ((tmp_path / "pipe.csv", "pipe.csv: not a regular file; expected the ENIGMA table"),
                          (tmp_path, "is a folder; expected the ENIGMA table")):
        with pytest.raises(SourceDataError, match=message):
            read_enigma_tables([path], fill_missing_channels="zero")


# ----------------------------------------------------------------------------- whole NIfTI import

def make_nifti_study(root: Path, subjects=("sub-01", "sub-02", "sub-03")) -> tuple[Path, Path, Path]:
    """CAT12 output folders, a CSV with the study's own column names and codes, FreeSurfer subjects."""
    images, fs_dir = root / "cat12", root / "freesurfer"
    for i, subject in enumerate(subjects):
        source_grid = TINY if i % 2 == 0 else TINY_RAS_10MM
        volume = blob(*source_grid, (LEFT_BLOB[0] + 10 * i, LEFT_BLOB[1], LEFT_BLOB[2]))
        save_nifti(images / subject / "mri" / f"mwp1{subject}_T1w.nii", volume, source_grid[1])
        write_freesurfer_subject(fs_dir, subject)
    table = pd.DataFrame({"Subject": list(subjects), "Age": [70.1, 65.0, 80.2][: len(subjects)],
                          "Gender": [1, 2, 2][: len(subjects)], "Group": ["CN", "AD", "CN"][: len(subjects)]})
    table.to_csv(root / "participants.csv", index=False)
    return images, root / "participants.csv", fs_dir


def test_nifti_import_end_to_end(tmp_path):
    images, table, fs_dir = make_nifti_study(tmp_path)
    cohort = import_nifti(images, table, tmp_path / "data" / "oasis3", id_column="Subject",
                          renames={"Age": "age", "Gender": "sex", "Group": "diagnosis"},
                          recodes={"sex": {"1": "M", "2": "F"}, "diagnosis": {"CN": "control", "AD": "ad"}},
                          constants={"site": "OAS"}, freesurfer_dir=fs_dir, grid=TINY, dtype="float32",
                          progress=False)
    table = cohort.participants
    assert table["participant_id"].tolist() == ["sub-01", "sub-02", "sub-03"]
    assert table["sex"].tolist() == ["M", "F", "F"] and table["diagnosis"].tolist() == ["control", "ad", "control"]
    assert table["site"].tolist() == ["OAS"] * 3
    assert cohort.meta["provenance"]["resampled_subjects"] == ["sub-02"]
    for i in range(3):
        expected = np.array([LEFT_BLOB[0] + 10 * i, LEFT_BLOB[1], LEFT_BLOB[2]])
        assert np.abs(peak_mm(cohort.volumes[i], cohort.affine) - expected).max() <= 15.0
    np.testing.assert_array_equal(cohort.roi[1], freesurfer_measures(fs_dir / "sub-02" / "stats"))


def test_nifti_import_lists_incomplete_subjects(tmp_path):
    images, table, fs_dir = make_nifti_study(tmp_path)
    (images / "sub-02" / "mri" / "mwp1sub-02_T1w.nii").unlink()
    (fs_dir / "sub-03" / "stats" / "rh.aparc.stats").unlink()
    arguments = dict(id_column="Subject", renames={"Age": "age", "Gender": "sex", "Group": "diagnosis"},
                     recodes={"sex": {"1": "M", "2": "F"}, "diagnosis": {"CN": "control", "AD": "ad"}},
                     constants={"site": "OAS"}, freesurfer_dir=fs_dir, grid=TINY, progress=False)
    with pytest.raises(SourceDataError, match=r"2 subject\(s\) incomplete: sub-02 \(no image\); "
                                              r"sub-03 \(no Desikan measures\)"):
        import_nifti(images, table, tmp_path / "c", **arguments)
    cohort = import_nifti(images, table, tmp_path / "c", drop_incomplete=True, **arguments)
    assert cohort.participants["participant_id"].tolist() == ["sub-01"]


def test_nifti_import_refuses_unmapped_codes_before_reading_images(tmp_path):
    images, table, fs_dir = make_nifti_study(tmp_path)
    with pytest.raises(SourceDataError, match=r"participants\.csv: column 'diagnosis' has values \['ad'\]"):
        import_nifti(images, table, tmp_path / "c", id_column="Subject",
                     renames={"Age": "age", "Gender": "sex", "Group": "diagnosis"},
                     recodes={"sex": {"1": "M", "2": "F"}, "diagnosis": {"CN": "control"}},
                     constants={"site": "OAS"}, freesurfer_dir=fs_dir, grid=TINY, progress=False)
    with pytest.raises(CohortError, match=r"participants\.csv: column 'sex' has 3 values outside \['M', 'F'\]"):
        import_nifti(images, table, tmp_path / "c", id_column="Subject",
                     renames={"Age": "age", "Gender": "sex", "Group": "diagnosis"}, constants={"site": "OAS"},
                     freesurfer_dir=fs_dir, grid=TINY, progress=False)
    assert not (tmp_path / "c").exists()


def test_participants_table_in_utf16_reads_as_in_utf8_and_unusable_tables_are_named(tmp_path):
    _, table, _ = make_nifti_study(tmp_path)
    wide = tmp_path / "participants-utf16.csv"                 # a spreadsheet's "Unicode text" encoding
    wide.write_bytes(table.read_text(encoding="utf-8").encode("utf-16"))
    pd.testing.assert_frame_equal(read_table(wide, "Subject"), read_table(table, "Subject"))
    shouted = tmp_path / "PARTICIPANTS.CSV"                     # a Windows-style name is still comma-separated
    shouted.write_bytes(table.read_bytes())
    pd.testing.assert_frame_equal(read_table(shouted, "Subject"), read_table(table, "Subject"))
    (tmp_path / "empty.csv").write_text("")
    for path, message in ((tmp_path / "gone.csv", "gone.csv: no such participants table"),
                          (tmp_path / "empty.csv", "empty.csv: empty file; expected the participants table"),
                          (tmp_path, "is a folder; expected the participants table")):
        with pytest.raises(SourceDataError, match=message):
            read_table(path, "Subject")


# ----------------------------------------------------------------------------- command line

def test_cli_imports_enigma_measures_with_explicit_fill(tmp_path, capsys):
    ids = pd.read_csv(ENIGMA_XDATA / "cov.csv")["SubjID"].tolist()[:2]
    images, table, _ = make_nifti_study(tmp_path, subjects=tuple(ids))
    base = ["import", "nifti", "--images", str(images), "--participants", str(table), "--id-column", "Subject",
            "--rename", "Age=age", "--rename", "Gender=sex", "--rename", "Group=diagnosis",
            "--recode", "sex", "1=M,2=F", "--recode", "diagnosis", "CN=control,AD=ad", "--constant", "site=X",
            "--enigma-csv", str(ENIGMA_XDATA / "metr2_CortThick.csv"),
            "--enigma-csv", str(ENIGMA_XDATA / "metr3_CortSurf.csv"), "--grid", "3.0", "--quiet",
            str(tmp_path / "cohort")]
    assert anatcl(base) == 1
    assert "--fill-missing-channels zero" in capsys.readouterr().err
    assert anatcl(base[:-1] + ["--drop-incomplete", "--fill-missing-channels", "zero", str(tmp_path / "cohort")]) == 0
    cohort = Cohort.open(tmp_path / "cohort")
    assert cohort.shape == GRIDS[3.0][0] and len(cohort) == 2
    assert len(cohort.meta["provenance"]["dropped"]) == 18     # ENIGMA subjects without images are reported


def test_cli_openbhb_to_the_3mm_grid(tmp_path):
    src = make_openbhb(tmp_path / "src", {5: "train"}, shape=GRIDS[1.5][0])
    assert anatcl(["import", "openbhb", str(src), str(tmp_path / "openbhb"), "--grid", "3.0", "--quiet"]) == 0
    cohort = Cohort.open(tmp_path / "openbhb")
    assert cohort.shape == (61, 73, 61)
    assert cohort.meta["provenance"]["resampled_from"]["shape"] == [121, 145, 121]
    assert anatcl(["import", "openbhb", str(src), str(tmp_path / "openbhb"), "--quiet"]) == 1    # exists


# ----------------------------------------------------------------------------- dataset recipes

def load_recipe(name: str):
    """data_recipes/<name>/convert.py as a module (the recipes are scripts, not a package)."""
    import importlib.util
    path = Path(__file__).resolve().parents[1] / "data_recipes" / name / "convert.py"
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_adni_recipe_splits_mci_by_conversion_within_the_horizon():
    adni = load_recipe("adni")
    visits = pd.DataFrame([
        # PTID, VISCODE, M, DX_bl, DX
        ("011_S_0001", "bl", 0, "CN", "CN"), ("011_S_0001", "m12", 12, "CN", "CN"),
        ("011_S_0002", "bl", 0, "LMCI", "MCI"), ("011_S_0002", "m24", 24, "LMCI", "Dementia"),
        ("011_S_0003", "bl", 0, "EMCI", "MCI"), ("011_S_0003", "m36", 36, "EMCI", "MCI"),
        ("011_S_0004", "bl", 0, "LMCI", "MCI"), ("011_S_0004", "m12", 12, "LMCI", "MCI"),   # too short
        ("011_S_0005", "bl", 0, "LMCI", "MCI"), ("011_S_0005", "m48", 48, "LMCI", "Dementia"),   # late: sMCI
        ("011_S_0006", "bl", 0, "AD", "Dementia"),
        ("011_S_0007", "bl", 0, "SMC", "CN"),
    ], columns=["PTID", "VISCODE", "M", "DX_bl", "DX"]).assign(AGE=70.0, PTGENDER="Female", SITE=11)
    table, left_out = adni.build_participants(visits, horizon_months=36)
    assert dict(zip(table["participant_id"], table["diagnosis"])) == {
        "011_S_0001": "control", "011_S_0002": "pmci", "011_S_0003": "smci", "011_S_0005": "smci",
        "011_S_0006": "ad"}
    assert set(table["sex"]) == {"F"} and set(table["site"]) == {"11"}
    assert sum(left_out.values()) == 2


def test_abide_recipe_codes_subtypes_handedness_and_missing_scores():
    abide = load_recipe("abide1")
    phenotypes = pd.DataFrame({
        "SUB_ID": [50002, 50003, 50004, 50005, 50006, 50007],
        "SITE_ID": ["PITT"] * 6,
        "DX_GROUP": [1, 1, 1, 2, 2, 1],
        "DSM_IV_TR": [1, 2, 3, 0, -9999, 4],
        "AGE_AT_SCAN": [16.8, 22.1, 13.0, 20.5, 19.0, 11.2],
        "SEX": [1, 2, 1, 1, 2, 1],
        "HANDEDNESS_CATEGORY": ["R", "L", "Ambi", -9999, "Mixed", "R"],
        "FIQ": [103, -9999, 110, 95, None, 100],
        "VIQ": [104, 99, -9999, 90, 101, 100],
        "PIQ": [100, 98, 97, -9999, 102, 100],
    })
    table, left_out = abide.build_participants(phenotypes)
    assert table["participant_id"].tolist() == ["sub-0050002", "sub-0050003", "sub-0050004", "sub-0050005",
                                                "sub-0050006"]
    assert table["diagnosis"].tolist() == ["autism", "asperger", "pdd_nos", "control", "control"]
    assert table["sex"].tolist() == ["M", "F", "M", "M", "F"]
    assert table["handedness"].tolist()[:3] == ["right", "left", "ambidextrous"]
    assert pd.isna(table["handedness"][3]) and table["handedness"][4] == "ambidextrous"
    assert table["fiq"].isna().tolist() == [False, True, False, False, True]
    assert sum(left_out.values()) == 1


def test_adni_recipe_end_to_end(tmp_path):
    adni = load_recipe("adni")
    subjects = ["011_S_0001", "011_S_0002"]
    for i, subject in enumerate(subjects):
        save_nifti(tmp_path / "cat12" / f"mwp1ADNI_{subject}_MR_MPRAGE_br_raw_2006_S{i}_I{i}.nii",
                   blob(*TINY, LEFT_BLOB), TINY[1])
        write_freesurfer_subject(tmp_path / "fs", subject)
    pd.DataFrame([("011_S_0001", "bl", 0, "CN", "CN"), ("011_S_0002", "bl", 0, "AD", "Dementia")],
                 columns=["PTID", "VISCODE", "M", "DX_bl", "DX"]).assign(
        AGE=[71.0, 75.5], PTGENDER=["Male", "Female"], SITE=11).to_csv(tmp_path / "ADNIMERGE.csv", index=False)
    assert adni.main(["--adnimerge", str(tmp_path / "ADNIMERGE.csv"), "--images", str(tmp_path / "cat12"),
                      "--freesurfer-dir", str(tmp_path / "fs"), "--grid", "3.0", str(tmp_path / "adni")]) == 0
    cohort = Cohort.open(tmp_path / "adni")
    assert cohort.participants["diagnosis"].tolist() == ["control", "ad"]
    assert cohort.meta["provenance"]["source"] == "ADNI"
    assert np.abs(peak_mm(cohort.volumes[0].astype(np.float32), cohort.affine) - LEFT_BLOB).max() <= 3.0


def test_unreadable_image_is_refused(tmp_path):
    (tmp_path / "mwp1broken.nii.gz").write_bytes(b"not a nifti at all")
    with pytest.raises(SourceDataError, match=r"mwp1broken\.nii\.gz: not a readable NIfTI image"):
        load_gm_map(tmp_path / "mwp1broken.nii.gz", TINY)
