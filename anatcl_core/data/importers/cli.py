"""Command line: `anatcl import openbhb SRC DEST` and `anatcl import nifti --images ... DEST`.

add_arguments builds the two subcommands; run calls the chosen importer and turns a refusal into one
line on stderr and exit status 1.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from anatcl_core.cli import path_argument
from anatcl_core.data.cohort import GRIDS, CohortError
from anatcl_core.data.importers.measures import FILL_CHOICES
from anatcl_core.data.importers.nifti import DEFAULT_ID_PATTERN, import_nifti
from anatcl_core.data.importers.openbhb import import_openbhb
from anatcl_core.data.importers.tables import parse_mapping


def _pairs(values: Sequence[str] | None, what: str) -> dict[str, str]:
    return parse_mapping(",".join(values), what) if values else {}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`anatcl import openbhb SRC DEST` and `anatcl import nifti --images ... DEST`."""
    sub = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)

    openbhb = sub.add_parser("openbhb", help="OpenBHB as distributed (participants.tsv + {train,val}/derivatives)")
    openbhb.add_argument("src", type=path_argument, help="OpenBHB folder holding participants.tsv, train/ and val/")
    openbhb.add_argument("--no-resource-check", action="store_true",
                         help="skip comparing resource/freesurfer_channels.txt with the expected channel order")

    nifti = sub.add_parser("nifti", help="CAT12 mwp1 NIfTI maps + participants table + FreeSurfer/ENIGMA measures")
    nifti.add_argument("--images", type=path_argument, required=True, help="folder searched recursively for the maps")
    nifti.add_argument("--pattern", default="mwp1*.nii*", help="file name glob (default %(default)s)")
    nifti.add_argument("--id-pattern", default=DEFAULT_ID_PATTERN,
                       help="regex on the path below --images whose 'id' group is the subject id")
    nifti.add_argument("--participants", type=path_argument, required=True, help="participants table (.tsv or .csv)")
    nifti.add_argument("--id-column", default="participant_id", help="subject id column of the table")
    nifti.add_argument("--rename", action="append", metavar="OLD=NEW", help="rename a column (repeatable)")
    nifti.add_argument("--constant", action="append", metavar="COLUMN=VALUE",
                       help="add a column with one value, e.g. site=OAS (repeatable)")
    nifti.add_argument("--recode", action="append", nargs=2, metavar=("COLUMN", "VALUE=CODE,..."),
                       help="recode a column, e.g. --recode sex 1=M,2=F (repeatable; unmapped values are errors)")
    measures = nifti.add_mutually_exclusive_group(required=True)
    measures.add_argument("--freesurfer-dir", type=path_argument,
                          help="SUBJECTS_DIR holding <participant_id>/stats/{lh,rh}.aparc.stats")
    measures.add_argument("--enigma-csv", type=path_argument, action="append",
                          help="ENIGMA table with SubjID and L_/R_<region>_<thickavg|surfavg|grayvol> (repeatable)")
    nifti.add_argument("--fill-missing-channels", choices=FILL_CHOICES, default="error",
                       help="channels the ENIGMA tables lack: 'error' (default) or store them as 'zero'")
    nifti.add_argument("--max-centre-offset-mm", type=float, default=40.0,
                       help="refuse images whose centre is further than this from the MNI field of view centre")
    nifti.add_argument("--source-name", default="NIfTI folder", help="dataset name recorded in meta.json provenance")

    for command in (openbhb, nifti):
        command.add_argument("dest", type=path_argument, help="cohort folder to create, e.g. data/openbhb")
        command.add_argument("--grid", type=float, default=1.5, choices=sorted(GRIDS),
                             help="voxel size of the cohort grid in mm (default %(default)s, the CAT12 grid)")
        command.add_argument("--dtype", default="float16", choices=["float16", "float32"],
                             help="storage type of vbm.npy (default %(default)s)")
        command.add_argument("--drop-incomplete", action="store_true",
                             help="leave out subjects lacking an image, a table row or measures, and list them")
        command.add_argument("--overwrite", action="store_true", help="replace an existing cohort at DEST")
        command.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run the chosen importer; a refusal prints its message and returns 1 instead of a traceback."""
    common = dict(grid=args.grid, dtype=args.dtype, drop_incomplete=args.drop_incomplete,
                  overwrite=args.overwrite, progress=not args.quiet)
    try:
        if args.source == "openbhb":
            cohort = import_openbhb(args.src, args.dest, check_resources=not args.no_resource_check, **common)
        else:
            cohort = import_nifti(
                args.images, args.participants, args.dest, id_column=args.id_column,
                renames=_pairs(args.rename, "--rename"), constants=_pairs(args.constant, "--constant"),
                recodes={column: parse_mapping(text, f"--recode {column}") for column, text in args.recode or []},
                freesurfer_dir=args.freesurfer_dir, enigma_csvs=args.enigma_csv or (),
                fill_missing_channels=args.fill_missing_channels, pattern=args.pattern, id_pattern=args.id_pattern,
                max_centre_offset_mm=args.max_centre_offset_mm, source=args.source_name, **common)
    except CohortError as err:
        print(f"anatcl import {args.source}: {err}", file=sys.stderr)
        return 1
    print(f"wrote {cohort!r}")
    return 0
