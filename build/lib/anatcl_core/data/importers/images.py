"""Grids and images: the cohort grid, resampling onto it, and reading one CAT12 grey-matter map.

A grid is (shape, [4, 4] voxel-to-mm affine); maps are float32 [X, Y, Z] on it. An image is refused
when it is not 3-D, not placed in MNI space, empty or non-finite, rather than resampled into a wrong brain.
"""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from nilearn.image import resample_img

from anatcl_core.data.cohort import GRIDS
from anatcl_core.data.importers.errors import SourceDataError

#: (shape in voxels, [4, 4] voxel-to-mm affine), like the values of cohort.GRIDS.
Grid = tuple[tuple[int, int, int], np.ndarray]


def resolve_grid(grid: float | Grid) -> Grid:
    """A voxel size in GRIDS (1.5 or 3.0 mm) or an explicit (shape, affine) -> (shape, [4, 4] affine)."""
    if isinstance(grid, (int, float)):
        if float(grid) not in GRIDS:
            raise SourceDataError(f"grid {grid}: unknown voxel size; expected one of {sorted(GRIDS)} mm")
        return GRIDS[float(grid)]
    shape, affine = grid
    return tuple(int(s) for s in shape), np.asarray(affine, dtype=np.float64)


def to_grid(data: np.ndarray, affine: np.ndarray, grid: Grid) -> np.ndarray:
    """Put a 3-D map [x, y, z] with voxel-to-mm `affine` on `grid`; -> float32 [X, Y, Z].

    Images already on the grid are returned unchanged. Otherwise nilearn resamples in world (mm)
    coordinates with continuous (cubic spline) interpolation, so flips, permutations and other
    resolutions all land at the right place; clipping to the input range removes spline overshoot
    (modulated GM is never negative).
    """
    shape, grid_affine = grid
    if data.shape == shape and np.allclose(affine, grid_affine, atol=1e-3):
        return np.asarray(data, dtype=np.float32)
    image = nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine)
    resampled = resample_img(image, target_affine=grid_affine, target_shape=shape, interpolation="continuous",
                             clip=True, force_resample=True, copy_header=True)
    return np.asarray(resampled.get_fdata(dtype=np.float32))


def check_mni_placement(affine: np.ndarray, shape: tuple[int, ...], where: str, grid: Grid,
                        max_centre_offset_mm: float) -> None:
    """Refuse an image whose field of view is not centred near the grid's MNI field of view.

    CAT12 writes mwp1 maps on an MNI bounding box centred near (0, -18, 18) mm; an image in scanner
    space usually has its centre elsewhere (or the voxel origin at a corner), and resampling it
    would silently produce a wrongly placed brain.
    """
    grid_shape, grid_affine = grid
    centre = (affine @ np.append((np.asarray(shape[:3]) - 1) / 2.0, 1.0))[:3]
    grid_centre = (grid_affine @ np.append((np.asarray(grid_shape) - 1) / 2.0, 1.0))[:3]
    offset = float(np.linalg.norm(centre - grid_centre))
    if not offset <= max_centre_offset_mm:
        raise SourceDataError(
            f"{where}: field 'affine' puts the image centre at {np.round(centre, 1).tolist()} mm, {offset:.0f} mm "
            f"from the MNI field of view centre {np.round(grid_centre, 1).tolist()}; expected a CAT12 map in MNI "
            f"space (within {max_centre_offset_mm:g} mm) - is this a native-space image?")


def load_gm_map(path: Path, grid: Grid, max_centre_offset_mm: float = 40.0) -> tuple[np.ndarray, bool]:
    """Read one CAT12 mwp1 map and put it on `grid`; -> (float32 [X, Y, Z], whether it was resampled).

    Refuses 4-D images (a trailing axis of length 1 is dropped first), images not placed in MNI space,
    and empty ones (all zero, or holding NaN/inf).
    """
    try:
        image = nib.load(str(path))
    except (OSError, EOFError, nib.filebasedimages.ImageFileError) as err:
        raise SourceDataError(f"{path}: not a readable NIfTI image ({err}); expected a CAT12 mwp1 map") from err
    if image.ndim == 4 and image.shape[3] == 1:
        image = nib.funcs.squeeze_image(image)
    if image.ndim != 3:
        raise SourceDataError(f"{path}: image shape {list(image.shape)} has {image.ndim} dimensions; expected one "
                              "3-D grey-matter map per file")
    check_mni_placement(image.affine, image.shape, str(path), grid, max_centre_offset_mm)
    data = image.get_fdata(dtype=np.float32)
    already_on_grid = data.shape == grid[0] and np.allclose(image.affine, grid[1], atol=1e-3)
    if not np.isfinite(data).all():
        raise SourceDataError(f"{path}: voxel values include {int((~np.isfinite(data)).sum())} NaN/inf; expected a "
                              "finite modulated grey-matter map")
    if not np.any(data):
        raise SourceDataError(f"{path}: every voxel is zero; expected a modulated grey-matter map")
    return to_grid(data, image.affine, grid), not already_on_grid
