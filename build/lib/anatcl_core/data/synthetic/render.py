"""Rendering one subject's modulated grey-matter map from its latent regional volumes.

The model::

    image = clip(site scale * subject scale * warp(template GM * exp(log GMV field)) + noise, 0)

log GMV field  each brain voxel follows the log GMV factor of its Desikan-Killiany region, blended
               smoothly across borders (`Templates.blend`); deep and cerebellar grey matter follow the
               subject's mean regional factor. Modulated VBM maps encode volume as intensity, so a
               region whose GMV is 10 % larger is 10 % brighter and its summed GM is 10 % larger.
warp           a smooth random displacement (cubic B-spline through control points every 24 mm,
               1.5 mm SD per axis): the residual misregistration left after non-linear normalisation.
scale, noise   site intensity scale (x a 2 % subject jitter) and Gaussian noise of the site's SD,
               only inside the brain; the background stays exactly 0.
"""
from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from anatcl_core.data.synthetic.templates import BRAIN_THRESHOLD, Templates

DISPLACEMENT_SD_MM = 1.5
CONTROL_SPACING_MM = 24.0
SUBJECT_SCALE_SD = 0.02


def log_gmv_field(templates: Templates, log_gmv: np.ndarray) -> np.ndarray:
    """log_gmv [68] -> [n_brain] float32 log GMV factor per brain voxel (C order of `templates.brain`)."""
    columns = np.append(log_gmv, log_gmv.mean()).astype(np.float32)   # last column: non-cortical grey matter
    return templates.blend @ columns


def modulated_gm(templates: Templates, log_gmv: np.ndarray) -> np.ndarray:
    """Template GM scaled by the subject's regional volumes, before warp and noise -> [X, Y, Z] float32."""
    volume = np.zeros(templates.shape, dtype=np.float32)
    volume[templates.brain] = templates.gm[templates.brain] * np.exp(log_gmv_field(templates, log_gmv))
    return volume


@functools.cache
def spline_upsampling_matrix(n_out: int, n_in: int) -> np.ndarray:
    """[n_out, n_in] matrix of 1-D cubic-spline zooming (ndimage.zoom, grid_mode) from n_in to n_out samples.

    Cubic-spline zooming is separable, so applying one such matrix per axis equals a 3-D
    `ndimage.zoom` of the control grid at a small fraction of its cost.
    """
    basis = np.eye(n_in)
    columns = [ndimage.zoom(basis[i], n_out / n_in, order=3, mode="nearest", grid_mode=True) for i in range(n_in)]
    return np.stack(columns, axis=1)


def smooth_displacement(shape: tuple[int, int, int], voxel_size: float, rng: np.random.Generator,
                        sd_mm: float = DISPLACEMENT_SD_MM, spacing_mm: float = CONTROL_SPACING_MM) -> np.ndarray:
    """Random smooth displacement field -> [3, X, Y, Z] float32, in voxels.

    Independent N(0, sd_mm) displacements at control points every `spacing_mm`, interpolated to the
    grid with cubic splines (so the field is smooth at scales below the control spacing).
    """
    extent_mm = np.asarray(shape) * voxel_size
    control_shape = tuple(int(n) for n in np.ceil(extent_mm / spacing_mm).astype(int) + 1)
    matrices = [spline_upsampling_matrix(n_out, n_in) for n_out, n_in in zip(shape, control_shape)]
    control = rng.standard_normal((3, *control_shape)) * (sd_mm / voxel_size)
    field = control.astype(np.float32)                                   # [3, i, j, k]
    for matrix in matrices:   # contracting axis 1 each time rotates (i, j, k) into (X, Y, Z)
        field = np.tensordot(field, matrix.astype(np.float32), axes=([1], [1]))
    return field


def warp(volume: np.ndarray, displacement: np.ndarray) -> np.ndarray:
    """Pull-back warp: out[x] = volume[x + displacement[:, x]] (trilinear, 0 outside) -> [X, Y, Z]."""
    grid = np.indices(volume.shape, dtype=np.float32)
    grid += displacement
    return ndimage.map_coordinates(volume, grid, order=1, mode="constant", cval=0.0).astype(np.float32)


def render_gm(templates: Templates, log_gmv: np.ndarray, intensity_scale: float, noise_sd: float,
              rng: np.random.Generator) -> np.ndarray:
    """One subject's synthetic modulated GM map -> [X, Y, Z] float32, values >= 0 (about 0 to 1.2).

    log_gmv: [68] regional log GMV factors; intensity_scale, noise_sd: the subject's site effects.
    """
    displacement = smooth_displacement(templates.shape, templates.voxel_size, rng)
    image = warp(modulated_gm(templates, log_gmv), displacement)
    image *= intensity_scale * np.exp(SUBJECT_SCALE_SD * rng.standard_normal())
    inside = image > BRAIN_THRESHOLD
    image[inside] += noise_sd * rng.standard_normal(int(inside.sum())).astype(np.float32)
    return np.maximum(image, 0.0, out=image)
