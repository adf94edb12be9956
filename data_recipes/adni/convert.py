"""ADNI -> the cohort layout: one baseline scan per subject, diagnosis control / smci / pmci / ad.

    python data_recipes/adni/convert.py --adnimerge ADNIMERGE.csv --images cat12/ \
        --freesurfer-dir freesurfer/ data/adni

The labels come from ADNIMERGE (the merged table of the ADNIMERGE R package / LONI download).
Columns used: PTID, VISCODE, DX_bl, DX, M (months since baseline), AGE, PTGENDER, SITE.
See README.md beside this file for the definitions and what is left out.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from anatcl_core.data.cohort import CohortError
from anatcl_core.data.importers import import_nifti

#: ADNIMERGE baseline diagnosis -> this cohort's code; MCI is split further by its follow-up.
BASELINE_CODES = {"CN": "control", "EMCI": "mci", "LMCI": "mci", "AD": "ad"}
#: CAT12 output of an ADNI download: mwp1ADNI_002_S_0295_MR_MPRAGE_..._S13408_I13722.nii -> 002_S_0295
ADNI_ID_PATTERN = r"mwp1ADNI_(?P<id>\d{3}_S_\d{4})_"


def mci_outcome(visits: pd.DataFrame, horizon_months: float) -> str | None:
    """'pmci', 'smci' or None (undecidable) for one MCI subject's ADNIMERGE rows.

    pMCI: a diagnosis of dementia at any visit up to `horizon_months` after baseline.
    sMCI: no dementia up to the horizon and a diagnosed visit at or after it (stable long enough to tell).
    """
    dated = visits.dropna(subset=["DX", "M"])
    within = dated[dated["M"] <= horizon_months]
    if within["DX"].astype(str).str.contains("dementia", case=False).any():
        return "pmci"
    if (dated["M"] >= horizon_months).any():
        return "smci"
    return None


def build_participants(adnimerge: pd.DataFrame, horizon_months: float = 36.0) -> tuple[pd.DataFrame, dict]:
    """ADNIMERGE rows (all visits) -> (one contract row per subject, {reason: number of subjects left out})."""
    baseline = adnimerge[adnimerge["VISCODE"] == "bl"]
    if baseline["PTID"].duplicated().any():
        raise CohortError(f"ADNIMERGE: column 'PTID' repeats at VISCODE 'bl' "
                          f"({baseline['PTID'][baseline['PTID'].duplicated()].tolist()[:5]}); expected one baseline")
    left_out: dict[str, int] = {}
    rows = []
    visits_by_subject = dict(tuple(adnimerge.groupby("PTID")))
    for _, row in baseline.iterrows():
        code = BASELINE_CODES.get(str(row["DX_bl"]))
        if code == "mci":
            code = mci_outcome(visits_by_subject[row["PTID"]], horizon_months)
            reason = f"MCI without a diagnosis at or beyond {horizon_months:g} months"
        else:
            reason = f"baseline diagnosis {row['DX_bl']!r} (not CN, EMCI, LMCI or AD)"
        if code is None:
            left_out[reason] = left_out.get(reason, 0) + 1
            continue
        rows.append({"participant_id": row["PTID"], "age": row["AGE"],
                     "sex": {"Male": "M", "Female": "F"}.get(row["PTGENDER"], row["PTGENDER"]),
                     "site": str(row["SITE"]), "diagnosis": code, "dx_bl": row["DX_bl"]})
    return pd.DataFrame(rows), left_out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adnimerge", type=Path, required=True, help="ADNIMERGE.csv")
    parser.add_argument("--images", type=Path, required=True, help="folder of CAT12 mwp1 maps (one per subject)")
    parser.add_argument("--id-pattern", default=ADNI_ID_PATTERN, help="regex whose 'id' group is the PTID")
    parser.add_argument("--freesurfer-dir", type=Path, help="SUBJECTS_DIR with one folder per PTID")
    parser.add_argument("--enigma-csv", type=Path, action="append", default=[], help="ENIGMA tables instead")
    parser.add_argument("--fill-missing-channels", choices=["error", "zero"], default="error")
    parser.add_argument("--horizon-months", type=float, default=36.0, help="sMCI/pMCI horizon (default 36)")
    parser.add_argument("--grid", type=float, default=1.5, choices=[1.5, 3.0])
    parser.add_argument("--drop-incomplete", action="store_true")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("dest", type=Path, help="cohort folder, e.g. data/adni")
    args = parser.parse_args(argv)

    adnimerge = pd.read_csv(args.adnimerge, low_memory=False)
    adnimerge["M"] = pd.to_numeric(adnimerge["M"], errors="coerce").astype(np.float64)
    table, left_out = build_participants(adnimerge, args.horizon_months)
    for reason, count in left_out.items():
        print(f"left out {count} subject(s): {reason}", file=sys.stderr)
    try:
        cohort = import_nifti(args.images, table, args.dest, id_pattern=args.id_pattern,
                              freesurfer_dir=args.freesurfer_dir, enigma_csvs=args.enigma_csv,
                              fill_missing_channels=args.fill_missing_channels, grid=args.grid,
                              drop_incomplete=args.drop_incomplete, overwrite=args.overwrite, source="ADNI")
    except CohortError as err:
        print(f"adni: {err}", file=sys.stderr)
        return 1
    print(cohort.participants["diagnosis"].value_counts().to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
