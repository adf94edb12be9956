"""Users' own grey-matter maps for `anatcl embed --images`: finding the files, naming the subjects, the CAT12 contract.

The encoder expects what CAT12 writes as `mwp1<name>.nii`: a modulated grey-matter map in MNI space on the 1.5 mm
grid of 121 x 145 x 121 voxels (`CAT12_GRID`, the one definition in `anatcl_core.data.cohort_contract.GRIDS`).
A map in MNI space on another axis-aligned grid (2 mm, 1 mm, another field of view, flipped or permuted axes) is
resampled onto it in world coordinates by nilearn (continuous interpolation). A map that is not in MNI space is
refused, not resampled into a wrongly placed brain.

Whether a map is in MNI space cannot be read from a NIfTI header; `check_mni_space` refuses what is clearly not:

  - an oblique affine (voxel axes tilted from the world axes): every MNI template grid is axis-aligned, so a tilt
    is the scanner's slice orientation kept by a native-space image (e.g. CAT12's own native `p1` maps);
  - a field of view covering less than 90% of the MNI152 brain's bounding box (`MNI_BRAIN_BOX_MM`): the sign of
    scanner coordinates with the origin at a corner, or of a tightly cropped image;
  - a field-of-view centre more than 40 mm from that of the CAT12 grid (the test `anatcl import` applies).

A native-space image that is axis-aligned, centred near the MNI origin and large enough passes these tests; no
header test can catch it, so the inputs must be CAT12 (or other MNI-normalised) outputs. The qform/sform codes are
not used: SPM/CAT12 versions and format converters write different codes (or none) for the same MNI-space maps.

Subject ids come from the BIDS entity `sub-<label>` in the file name (`mwp1sub-01_T1w.nii` -> `sub-01`), else
the name without `.nii`/`.nii.gz`.
"""
from __future__ import annotations

import glob
import gzip
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from anatcl_core.atomic import write_atomic
from anatcl_core.data.cohort import GRIDS, Cohort
from anatcl_core.data.importers.errors import SourceDataError
from anatcl_core.data.importers.images import Grid, check_mni_placement, to_grid

#: The CAT12 grid: ((121, 145, 121) voxels, [4, 4] voxel-to-MNI-mm affine at 1.5 mm).
CAT12_GRID = GRIDS[1.5]
#: Bounding box (mm) of the MNI152 2009 brain mask shipped with nilearn: x, y, z ranges of its voxel centres.
MNI_BRAIN_BOX_MM = ((-72.0, 72.0), (-107.0, 74.0), (-72.0, 83.0))
#: Least fraction of MNI_BRAIN_BOX_MM's volume a map's field of view must cover.
MIN_BRAIN_COVERAGE = 0.9
#: Largest distance (mm) between a map's field-of-view centre and the CAT12 grid's.
MAX_CENTRE_OFFSET_MM = 40.0
#: Largest tilt of a voxel axis from its world axis (degrees) still counted as axis-aligned (rounding noise).
MAX_TILT_DEGREES = 0.5
NIFTI_SUFFIXES = (".nii", ".nii.gz")


class MapError(ValueError):
    """A grey-matter map that breaks the input contract; the message names the file, what was found and expected."""


@dataclass(frozen=True)
class GMMap:
    """One input map, its header checked: `path`, `participant_id`, and whether it lies on the target grid already."""

    path: Path
    participant_id: str
    on_grid: bool


def find_images(paths: Sequence[str | Path]) -> list[Path]:
    """Files named by `paths`, in the order given: a file as is, a folder searched recursively for `*.nii` and
    `*.nii.gz` (sorted), a glob pattern (sorted; the shell usually expands it first). Duplicates are dropped.

    A folder or a pattern with no NIfTI file, or a path that does not exist, is a MapError.
    """
    found: dict[Path, Path] = {}
    for given in map(str, paths):
        path = Path(given)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if _is_nifti_name(p) and p.is_file())
            where = f"{path}: no .nii or .nii.gz file in this folder (searched recursively)"
        elif path.is_file():
            files, where = [path], ""
        elif re.search(r"[*?[]", given):
            files = sorted(p for p in map(Path, glob.glob(given, recursive=True)) if _is_nifti_name(p) and p.is_file())
            where = f"{given}: no .nii or .nii.gz file matches this pattern"
        else:
            raise MapError(f"--images {given}: no such file or folder; expected NIfTI files, folders or a pattern")
        if not files:
            raise MapError(f"{where}; expected CAT12 mwp1 grey-matter maps")
        for file in files:
            found.setdefault(file.resolve(), file)
    return list(found.values())


def _is_nifti_name(path: Path) -> bool:
    return path.name.endswith(NIFTI_SUFFIXES) and not path.name.startswith(".")   # not macOS '._' droppings


def participant_id(path: str | Path) -> str:
    """'mwp1sub-01_T1w.nii' -> 'sub-01' (a BIDS label is letters and digits); 'scan7.nii.gz' -> 'scan7'."""
    name = Path(path).name
    match = re.search(r"sub-([A-Za-z0-9]+)", name)
    if match:
        return f"sub-{match.group(1)}"
    return re.sub(r"\.nii(\.gz)?$", "", name)


def assign_ids(paths: Sequence[Path]) -> list[str]:
    """participant_id of each path; two paths with one id is a MapError naming both files."""
    seen: dict[str, Path] = {}
    for path in paths:
        subject = participant_id(path)
        if subject in seen:
            raise MapError(f"{path}: participant id '{subject}' is also the id of {seen[subject]}; expected one "
                           "map per participant (two sessions or tissue classes? embed them in separate runs)")
        seen[subject] = path
    return list(seen)


def open_map(path: Path) -> nib.Nifti1Image:
    """The NIfTI image at `path`, header read and data not yet loaded; a trailing axis of length 1 is dropped.

    Refused (MapError): a name not ending in .nii/.nii.gz, a file nibabel cannot read, a 4-D image.
    """
    if not path.name.endswith(NIFTI_SUFFIXES):
        raise MapError(f"{path}: not a NIfTI file (name ends in {''.join(path.suffixes)[-12:] or 'no suffix'!r}); "
                       "expected a .nii or .nii.gz grey-matter map")
    try:
        image = nib.load(str(path))
    except (OSError, EOFError, ValueError, nib.filebasedimages.ImageFileError) as err:
        raise MapError(f"{path}: not a readable NIfTI image ({' '.join(str(err).split())}); expected a CAT12 "
                       "mwp1 grey-matter map") from None
    if image.ndim == 4 and image.shape[3] == 1:
        image = nib.funcs.squeeze_image(image)
    if image.ndim != 3:
        raise MapError(f"{path}: image shape {list(image.shape)} has {image.ndim} dimensions; expected one 3-D "
                       "grey-matter map per file (a 4-D series is not a CAT12 mwp1 map)")
    return image


def check_mni_space(affine: np.ndarray, shape: Sequence[int], path: Path, grid: Grid = CAT12_GRID) -> bool:
    """Refuse a header that is clearly not MNI space (see the module docstring); -> whether it is `grid` already.

    affine: [4, 4] voxel-to-mm; shape: 3 voxel counts; grid: (shape, affine), a value of `GRIDS`.
    """
    rotation = np.asarray(affine, dtype=np.float64)[:3, :3]
    lengths = np.linalg.norm(rotation, axis=0)
    if not np.all(lengths > 0):
        raise MapError(f"{path}: field 'affine' has a zero voxel size ({rotation.tolist()}); expected a valid "
                       "voxel-to-mm matrix")
    cosines = np.abs(rotation).max(axis=0) / lengths
    tilt = float(np.degrees(np.arccos(np.clip(cosines.min(), -1.0, 1.0))))
    if tilt > MAX_TILT_DEGREES or len(set(np.abs(rotation).argmax(axis=0))) < 3:
        raise MapError(f"{path}: field 'affine' is oblique (a voxel axis is tilted {tilt:.1f} degrees from the "
                       "world axes); expected an MNI-space map on an axis-aligned grid like CAT12's - is this a "
                       "native-space image?")
    coverage, box = brain_coverage(affine, shape)
    if coverage < MIN_BRAIN_COVERAGE:
        seen = ", ".join(f"{axis} {lo:.0f}..{hi:.0f}" for axis, (lo, hi) in zip("xyz", box))
        brain = ", ".join(f"{axis} {lo:.0f}..{hi:.0f}" for axis, (lo, hi) in zip("xyz", MNI_BRAIN_BOX_MM))
        raise MapError(f"{path}: field of view ({seen} mm) covers {coverage:.0%} of the MNI brain ({brain} mm); "
                       f"expected at least {MIN_BRAIN_COVERAGE:.0%} - is this a native-space or cropped image?")
    try:
        check_mni_placement(affine, tuple(shape), str(path), CAT12_GRID, MAX_CENTRE_OFFSET_MM)
    except SourceDataError as err:
        raise MapError(str(err)) from None
    return tuple(shape) == grid[0] and np.allclose(affine, grid[1], atol=1e-3)


def brain_coverage(affine: np.ndarray, shape: Sequence[int]) -> tuple[float, list[tuple[float, float]]]:
    """(fraction of MNI_BRAIN_BOX_MM's volume inside the field of view, the field of view as [(lo, hi)] x 3 mm).

    The field of view is the box spanned by the voxel centres, for an axis-aligned `affine` [4, 4].
    """
    corners = np.array([[0, 0, 0], np.asarray(shape[:3]) - 1], dtype=np.float64)
    world = nib.affines.apply_affine(affine, corners)                # [2, 3] mm
    box = [(float(lo), float(hi)) for lo, hi in zip(world.min(axis=0), world.max(axis=0))]
    fraction = 1.0
    for (lo, hi), (brain_lo, brain_hi) in zip(box, MNI_BRAIN_BOX_MM):
        fraction *= max(0.0, min(hi, brain_hi) - max(lo, brain_lo)) / (brain_hi - brain_lo)
    return fraction, box


def inspect_maps(paths: Sequence[Path], grid: Grid = CAT12_GRID) -> list[GMMap]:
    """Check ids and headers of every map before any voxel is read (a bad file costs no model load or download).

    `grid` is the grid the encoder was trained on (the CAT12 1.5 mm grid for the released weights)."""
    ids = assign_ids(paths)
    maps = []
    for path, subject in zip(paths, ids):
        image = open_map(path)
        maps.append(GMMap(path, subject, check_mni_space(image.affine, image.shape, path, grid)))
    return maps


def read_map(gm_map: GMMap, grid: Grid = CAT12_GRID) -> np.ndarray:
    """The map's voxels on `grid` (default CAT12: float32 [121, 145, 121]), resampled (cubic spline, clipped to
    the input range) when its grid differs. Refused (MapError): unreadable data, NaN/inf voxels, an all-zero map."""
    image = open_map(gm_map.path)
    try:
        data = np.asarray(image.get_fdata(dtype=np.float32))
    except (OSError, EOFError, ValueError) as err:         # a header followed by truncated or corrupt data
        raise MapError(f"{gm_map.path}: voxel data cannot be read ({' '.join(str(err).split())}); expected a "
                       "complete NIfTI file") from None
    if not np.isfinite(data).all():
        raise MapError(f"{gm_map.path}: voxel values include {int((~np.isfinite(data)).sum())} NaN/inf; expected "
                       "a finite modulated grey-matter map")
    if not np.any(data):
        raise MapError(f"{gm_map.path}: every voxel is zero; expected a modulated grey-matter map")
    return to_grid(data, image.affine, grid)


def write_maps(cohort: Cohort, folder: str | Path, rows: Sequence[int] | None = None) -> list[Path]:
    """Write cohort subjects as CAT12 names them, `<folder>/<participant_id>/mri/mwp1<participant_id>_T1w.nii.gz`.

    cohort: a `Cohort` (its grid and affine are kept); rows: which participants (default all). Each file is
    float32, written atomically; returns the paths in `rows` order. For trying `anatcl embed --images` on
    data whose answers are known (the book's "own data" chapter); real maps come from CAT12 itself.
    """
    rows = range(len(cohort)) if rows is None else rows
    paths = []
    for row in rows:
        subject = str(cohort.participants["participant_id"].iloc[row])
        path = Path(folder) / subject / "mri" / f"mwp1{subject}_T1w.nii.gz"      # write_atomic makes the folders
        image = nib.Nifti1Image(np.asarray(cohort.volumes[row], dtype=np.float32), cohort.affine)
        write_atomic(path, lambda f, image=image: f.write(gzip.compress(image.to_bytes(), compresslevel=1)))
        paths.append(path)
    return paths
