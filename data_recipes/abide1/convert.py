"""ABIDE I -> the cohort layout: diagnosis control / autism / asperger / pdd_nos, handedness and WASI IQ.

    python data_recipes/abide1/convert.py --phenotypes Phenotypic_V1_0b.csv --images cat12/ \
        --freesurfer-dir freesurfer/ data/abide1

Columns used from ABIDE I's phenotypic file: SUB_ID, SITE_ID, DX_GROUP, DSM_IV_TR, AGE_AT_SCAN, SEX,
HANDEDNESS_CATEGORY, FIQ, VIQ, PIQ (-9999 or an empty cell means not assessed).
Subjects are named sub-<SUB_ID padded to 7 digits>, as in ABIDE's BIDS release (sub-0050002).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from anatcl_core.data.cohort import CohortError
from anatcl_core.data.importers import import_nifti

#: DSM-IV-TR subtype -> diagnosis code; 4 ("Asperger's or PDD-NOS") cannot be placed and is left out.
DSM_CODES = {0: "control", 1: "autism", 2: "asperger", 3: "pdd_nos"}
#: Without a DSM-IV-TR code, DX_GROUP 2 (control) still says control; DX_GROUP 1 lacks the subtype.
DX_GROUP_CONTROL = 2
SEX_CODES = {1: "M", 2: "F"}
HANDEDNESS_CODES = {"R": "right", "L": "left", "Ambi": "ambidextrous", "Mixed": "ambidextrous"}
MISSING = -9999


def _assessed(values: pd.Series) -> pd.Series:
    """Numbers with ABIDE's -9999 (and blanks) turned into NaN."""
    numbers = pd.to_numeric(values, errors="coerce")
    return numbers.where(numbers != MISSING)


def build_participants(phenotypes: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """ABIDE I phenotypic rows -> (contract rows, {reason: number of subjects left out})."""
    dsm = _assessed(phenotypes["DSM_IV_TR"])
    diagnosis = dsm.map(DSM_CODES)
    diagnosis = diagnosis.where(dsm.notna() | (phenotypes["DX_GROUP"] != DX_GROUP_CONTROL), "control")
    raw = phenotypes["HANDEDNESS_CATEGORY"]
    not_assessed = raw.isna() | (pd.to_numeric(raw, errors="coerce") == MISSING) | raw.astype(str).str.strip().eq("")
    handedness_raw = raw.where(~not_assessed).astype(object).map(lambda v: v if pd.isna(v) else str(v).strip())
    unknown = sorted(set(handedness_raw.dropna().astype(str)) - set(HANDEDNESS_CODES))
    if unknown:
        raise CohortError(f"phenotypes: column 'HANDEDNESS_CATEGORY' has values {unknown}; expected one of "
                          f"{sorted(HANDEDNESS_CODES)} (extend HANDEDNESS_CODES in convert.py)")
    table = pd.DataFrame({
        "participant_id": [f"sub-{int(s):07d}" for s in phenotypes["SUB_ID"]],
        "age": pd.to_numeric(phenotypes["AGE_AT_SCAN"], errors="coerce"),
        "sex": pd.to_numeric(phenotypes["SEX"], errors="coerce").map(SEX_CODES),
        "site": phenotypes["SITE_ID"].astype(str),
        "diagnosis": diagnosis,
        "handedness": handedness_raw.map(HANDEDNESS_CODES),
        "fiq": _assessed(phenotypes["FIQ"]),
        "viq": _assessed(phenotypes["VIQ"]),
        "piq": _assessed(phenotypes["PIQ"]),
    })
    unplaced = table["diagnosis"].isna().to_numpy()
    left_out = {"autism spectrum without a DSM-IV-TR subtype (0-3)": int(unplaced.sum())} if unplaced.any() else {}
    return table[~unplaced].reset_index(drop=True), left_out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phenotypes", type=Path, required=True, help="ABIDE I phenotypic CSV")
    parser.add_argument("--images", type=Path, required=True, help="folder of CAT12 mwp1sub-<id>_T1w.nii maps")
    parser.add_argument("--freesurfer-dir", type=Path, help="SUBJECTS_DIR with one folder per sub-<id>")
    parser.add_argument("--enigma-csv", type=Path, action="append", default=[], help="ENIGMA tables instead")
    parser.add_argument("--fill-missing-channels", choices=["error", "zero"], default="error")
    parser.add_argument("--grid", type=float, default=1.5, choices=[1.5, 3.0])
    parser.add_argument("--drop-incomplete", action="store_true")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("dest", type=Path, help="cohort folder, e.g. data/abide1")
    args = parser.parse_args(argv)

    table, left_out = build_participants(pd.read_csv(args.phenotypes))
    for reason, count in left_out.items():
        print(f"left out {count} subject(s): {reason}", file=sys.stderr)
    try:
        cohort = import_nifti(args.images, table, args.dest, freesurfer_dir=args.freesurfer_dir,
                              enigma_csvs=args.enigma_csv, fill_missing_channels=args.fill_missing_channels,
                              grid=args.grid, drop_incomplete=args.drop_incomplete, overwrite=args.overwrite,
                              source="ABIDE I")
    except CohortError as err:
        print(f"abide1: {err}", file=sys.stderr)
        return 1
    print(cohort.participants["diagnosis"].value_counts().to_string())
    print(f"handedness assessed: {int(np.sum(cohort.participants['handedness'].notna()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
