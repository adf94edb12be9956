"""Desikan measures [7, 68] per subject from FreeSurfer ?h.aparc.stats files or ENIGMA-format CSV tables.

Rows follow anatomy.CHANNELS and columns anatomy.REGIONS. APARC_COLUMNS and ENIGMA_SUFFIXES say which
source column feeds which channel; FILL_CHOICES says what to do with channels an ENIGMA table lacks.
"""
from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from anatcl_core.anatomy import CHANNELS, REGIONS
from anatcl_core.cli import one_line
from anatcl_core.data.importers.errors import SourceDataError
from anatcl_core.feature_files import read_text_table


#: FreeSurfer aparc.stats column for each OpenBHB channel, in anatomy.CHANNELS order.
APARC_COLUMNS: dict[str, str] = {
    "surface_area_mm^2": "SurfArea",
    "gray_matter_volume_mm^3": "GrayVol",
    "average_thickness_mm": "ThickAvg",
    "thickness_stddev_mm": "ThickStd",
    "integrated_rectified_mean_curvature_mm^-1": "MeanCurv",
    "integrated_rectified_gaussian_curvature_mm^-2": "GausCurv",
    "intrinsic_curvature_index": "CurvInd",
}
#: ENIGMA column suffix (``L_bankssts_thickavg``) for the channels ENIGMA tables can carry.
ENIGMA_SUFFIXES: dict[str, str] = {
    "thickavg": "average_thickness_mm",
    "surfavg": "surface_area_mm^2",
    "grayvol": "gray_matter_volume_mm^3",
}
FILL_CHOICES = ("error", "zero")


def _repeated(values: pd.Series) -> list:
    """The values that occur more than once (first 5)."""
    return sorted(set(values[values.duplicated()]))[:5]


def read_aparc_stats(path: Path) -> pd.DataFrame:
    """One FreeSurfer ?h.aparc.stats file -> DataFrame indexed by StructName, one column per ColHeader."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as err:
        raise SourceDataError(f"{path}: cannot be read ({err}); expected a FreeSurfer aparc.stats file") from err
    headers = [line.split()[2:] for line in lines if line.startswith("# ColHeaders")]
    if not headers:
        raise SourceDataError(f"{path}: no '# ColHeaders' line; expected a FreeSurfer aparc.stats table")
    body = "\n".join(line for line in lines if line.strip() and not line.startswith("#"))
    table = pd.read_csv(io.StringIO(body), sep=r"\s+", names=headers[-1], header=None)
    needed = ["StructName", *APARC_COLUMNS.values()]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise SourceDataError(f"{path}: table lacks column(s) {missing}; expected {needed}")
    if table["StructName"].duplicated().any():
        raise SourceDataError(f"{path}: field 'StructName' repeats {_repeated(table['StructName'])}; expected "
                              "each region once")
    return table.set_index("StructName")


def freesurfer_measures(stats_dir: Path) -> np.ndarray:
    """<subject>/stats holding lh.aparc.stats and rh.aparc.stats -> [7, 68] float32 in CHANNELS/REGIONS order."""
    roi = np.empty((len(CHANNELS), len(REGIONS)), dtype=np.float32)
    for hemi in ("lh", "rh"):
        path = stats_dir / f"{hemi}.aparc.stats"
        table = read_aparc_stats(path)
        names = [r[3:] for r in REGIONS if r.startswith(f"{hemi}-")]
        missing = [n for n in names if n not in table.index]
        if missing:
            raise SourceDataError(f"{path}: field 'StructName' lacks Desikan region(s) {missing}; expected all 34 "
                                  "cortical regions of the aparc (Desikan-Killiany) atlas")
        values = table.loc[names, list(APARC_COLUMNS.values())].to_numpy(dtype=np.float64).T   # [7, 34]
        if not np.isfinite(values).all():
            raise SourceDataError(f"{path}: non-numeric or missing measures; expected finite numbers")
        columns = [REGIONS.index(f"{hemi}-{n}") for n in names]
        roi[:, columns] = values
    return roi


def freesurfer_measures_by_subject(freesurfer_dir: Path, ids: Iterable[str]) -> dict[str, np.ndarray]:
    """{id: [7, 68]} for every id whose <freesurfer_dir>/<id>/stats holds both aparc.stats files."""
    found = {}
    for subject in ids:
        stats_dir = freesurfer_dir / subject / "stats"
        if (stats_dir / "lh.aparc.stats").is_file() and (stats_dir / "rh.aparc.stats").is_file():
            found[subject] = freesurfer_measures(stats_dir)
    return found


def read_enigma_file(path: Path) -> dict[str, pd.DataFrame]:
    """One ENIGMA-style CSV -> {channel: DataFrame [subjects, 68] indexed by SubjID} for each measure it holds."""
    try:
        table = read_text_table(path, "ENIGMA table", sep=",", dtype={"SubjID": str})
    except (OSError, ValueError) as err:
        raise SourceDataError(one_line(err)) from err
    if "SubjID" not in table.columns:
        raise SourceDataError(f"{path}: no column 'SubjID'; expected ENIGMA's subject identifier column")
    if table["SubjID"].duplicated().any():
        raise SourceDataError(f"{path}: column 'SubjID' repeats {_repeated(table['SubjID'])}; expected one row "
                              "per subject")
    table = table.set_index("SubjID")
    enigma_regions = [("L_" if r.startswith("lh-") else "R_") + r[3:] for r in REGIONS]
    region_columns = [c for c in table.columns if c.startswith(("L_", "R_"))]
    suffixes = sorted({c.rsplit("_", 1)[-1] for c in region_columns} & set(ENIGMA_SUFFIXES))
    if not suffixes:
        raise SourceDataError(f"{path}: no columns named like 'L_bankssts_<measure>' with a measure in "
                              f"{sorted(ENIGMA_SUFFIXES)}")
    out = {}
    for suffix in suffixes:
        columns = [f"{r}_{suffix}" for r in enigma_regions]
        missing = [c for c in columns if c not in table.columns]
        if missing:
            raise SourceDataError(f"{path}: missing column(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}; "
                                  f"expected all 68 Desikan regions for '{suffix}'")
        values = table[columns].apply(pd.to_numeric, errors="coerce")
        bad = values.index[~np.isfinite(values.to_numpy(dtype=np.float64)).all(axis=1)].tolist()
        if bad:
            raise SourceDataError(f"{path}: non-numeric or missing '{suffix}' values for SubjID {bad[:5]}; "
                                  "expected finite numbers (drop those rows or fix them)")
        out[ENIGMA_SUFFIXES[suffix]] = values
    return out


def read_enigma_tables(paths: Sequence[Path], fill_missing_channels: str = "error") -> dict[str, np.ndarray]:
    """ENIGMA-style CSVs (SubjID, L_bankssts_thickavg ... R_insula_surfavg) -> {SubjID: [7, 68] float32}.

    Each file may carry any of the suffixes in ENIGMA_SUFFIXES; subjects must appear in every file.
    Channels no file carries are an error unless fill_missing_channels='zero': the layout forbids NaN,
    and a constant channel carries no information (range normalisation maps it to 0.5 for everyone).
    """
    if fill_missing_channels not in FILL_CHOICES:
        raise SourceDataError(f"fill_missing_channels '{fill_missing_channels}': expected one of {list(FILL_CHOICES)}")
    per_channel: dict[str, pd.DataFrame] = {}
    for path in paths:
        for channel, values in read_enigma_file(Path(path)).items():
            if channel in per_channel:
                raise SourceDataError(f"{path}: channel '{channel}' already came from another file; expected once")
            per_channel[channel] = values
    missing_channels = [c for c in CHANNELS if c not in per_channel]
    if missing_channels and fill_missing_channels == "error":
        raise SourceDataError(f"{', '.join(map(str, paths))}: no column for channel(s) {missing_channels}; expected "
                              "all 7 Desikan channels, or pass --fill-missing-channels zero to store them as 0")
    ids = sorted(set.intersection(*(set(v.index) for v in per_channel.values())))
    out = {}
    for subject in ids:
        roi = np.zeros((len(CHANNELS), len(REGIONS)), dtype=np.float32)
        for channel, values in per_channel.items():
            roi[CHANNELS.index(channel)] = values.loc[subject].to_numpy(dtype=np.float32)
        out[subject] = roi
    return out
