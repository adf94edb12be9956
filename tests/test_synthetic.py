"""The synthetic cohorts: anatomy from the real templates, images that agree with tables,
learnable and unlearnable targets where intended, ENIGMA patterns, determinism."""
from __future__ import annotations

import filecmp

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from anatcl_core.anatomy import CHANNELS, REGIONS
from anatcl_core.data.cohort import Cohort, CohortError
from anatcl_core.data.enigma import adjusted_cohens_d, cohens_d
from anatcl_core.data.synthetic import COHORTS, render_subject, simulate_tables, write_synthetic_cohort
from anatcl_core.data.synthetic.cohorts import class_counts
from anatcl_core.data.synthetic.templates import load_templates

GMV = CHANNELS.index("gray_matter_volume_mm^3")
THICKNESS = CHANNELS.index("average_thickness_mm")


@pytest.fixture(scope="module")
def openbhb(tmp_path_factory) -> Cohort:
    """A small 3 mm OpenBHB-like cohort written through the cohort layout."""
    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic_cohort(root, "openbhb", 60, voxel_size=3.0, seed=11, progress=False)
    return Cohort.open(root / "openbhb")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_mean_image_overlaps_template_gm(openbhb):
    templates = load_templates(3.0)
    mean_image = np.asarray(openbhb.volumes, dtype=np.float32).mean(axis=0)
    score = dice(mean_image > 0.5, templates.gm > 0.5)
    assert score > 0.8, f"Dice {score:.3f}"
    assert np.allclose(openbhb.affine, templates.affine)


def test_left_regions_have_negative_mni_x(openbhb):
    region_map = load_templates(3.0).region_map
    for hemisphere, sign in (("lh-", -1), ("rh-", 1)):
        labels = [k + 1 for k, r in enumerate(REGIONS) if r.startswith(hemisphere)]
        voxels = np.argwhere(np.isin(region_map, labels))
        x_mm = nib.affines.apply_affine(openbhb.affine, voxels)[:, 0]
        assert np.mean(np.sign(x_mm) == sign) > 0.98


def test_table_gmv_agrees_with_image(openbhb):
    """Per region, the table's GMV and the image's GM summed inside the region move together."""
    region_map = load_templates(3.0).region_map.ravel()
    volumes = np.asarray(openbhb.volumes, dtype=np.float32).reshape(len(openbhb), -1)
    voxel_mm3 = 27.0
    image_gmv = np.stack([volumes[:, region_map == k + 1].sum(axis=1) * voxel_mm3 for k in range(len(REGIONS))], 1)
    table_gmv = openbhb.roi[:, GMV]
    r = np.array([np.corrcoef(image_gmv[:, k], table_gmv[:, k])[0, 1] for k in range(len(REGIONS))])
    assert np.median(r) > 0.8, f"median r {np.median(r):.3f}"
    ratio = image_gmv / table_gmv            # the per-region proportionality constant
    # Expected spread: the table's measurement noise (thickness 5 %, area 1 %, GMV 4 %: 6.5 %), the site
    # intensity scale (5 %) and subject jitter (2 %) give ~8.4 %, before the warp moves GM across borders.
    assert np.median(ratio.std(axis=0) / ratio.mean(axis=0)) < 0.12


def test_magnitudes_are_realistic(openbhb):
    roi = openbhb.roi
    assert 1.5 < np.median(roi[:, THICKNESS]) < 3.5 and roi[:, THICKNESS].min() > 1.0 and roi[:, THICKNESS].max() < 5
    assert 100 < np.median(roi[:, 0]) < 10_000
    assert 1_000 < np.median(roi[:, GMV]) < 20_000
    assert (roi > 0).all()
    assert 0.0 <= float(openbhb.volumes.min()) and float(openbhb.volumes.max()) < 2.0
    assert set(openbhb.participants["split"]) == {"train", "internal_test", "external_test"}


def test_external_test_sites_are_held_out():
    table = simulate_tables("openbhb", 400, seed=2).participants
    external = set(table.loc[table["split"] == "external_test", "site"])
    assert external and external.isdisjoint(table.loc[table["split"] != "external_test", "site"])


def test_age_is_learnable_and_anatomy_free_phenotype_is_not():
    healthy = simulate_tables("openbhb", 800, seed=3)
    x, age = np.log(healthy.roi[:, GMV]), healthy.participants["age"].to_numpy()
    ridge = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 13)))
    predicted = cross_val_predict(ridge, x, age, cv=KFold(5, shuffle=True, random_state=0))
    assert np.abs(predicted - age).mean() < 0.7 * np.abs(age - age.mean()).mean()

    patients = simulate_tables("schizconnect", 1500, seed=3)
    table = patients.participants
    features = np.column_stack([np.log(patients.roi[:, GMV]), table["age"], table["sex"] == "M"])
    logistic = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, class_weight="balanced", max_iter=2000))
    cv = StratifiedKFold(5, shuffle=True, random_state=0)

    def balanced_accuracy(column: str, threshold: float) -> float:
        rated = table[column].notna().to_numpy()
        labels = table.loc[rated, column].to_numpy(dtype=float) >= threshold
        return cross_val_score(logistic, features[rated], labels, cv=cv, scoring="balanced_accuracy").mean()

    assert balanced_accuracy("gait", 1) < 0.58            # anatomy-free: chance
    assert balanced_accuracy("aims_overall", 2) > 0.6     # anatomy-driven: above chance


def test_ridge_ranks_the_measures_for_age_as_the_papers_table_6():
    """Paper Table 6 (real OpenBHB): area and GMV predict age best (MAE 6.9-7.0), mean curvature next (7.8),
    Gaussian curvature, intrinsic curvature and thickness worst (8.3-8.6)."""
    tables = simulate_tables("openbhb", 1000, seed=5)
    age = tables.participants["age"].to_numpy()
    ridge = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 5, 15)))
    channels = {"area": "surface_area_mm^2", "gmv": "gray_matter_volume_mm^3", "thickness": "average_thickness_mm",
                "mean_curvature": "integrated_rectified_mean_curvature_mm^-1",
                "gaussian_curvature": "integrated_rectified_gaussian_curvature_mm^-2"}
    mae = {}
    for measure, channel in channels.items():
        x = np.log(tables.roi[:, CHANNELS.index(channel)])
        predicted = cross_val_predict(ridge, x, age, cv=KFold(5, shuffle=True, random_state=0))
        mae[measure] = np.abs(predicted - age).mean()
    assert set(sorted(mae, key=mae.get)[:2]) == {"area", "gmv"}, mae
    assert mae["mean_curvature"] < mae["gaussian_curvature"], mae


def test_images_carry_the_age_signal_of_the_tables():
    """Grey matter summed inside each region of the rendered images predicts age nearly as well as the table."""
    tables = simulate_tables("openbhb", 150, seed=7)
    age = tables.participants["age"].to_numpy()
    region_map = load_templates(3.0).region_map.ravel()
    volumes = np.stack([render_subject(tables, s, 3.0).ravel() for s in range(len(age))])
    image_regions = np.stack([volumes[:, region_map == k + 1].sum(axis=1) for k in range(len(REGIONS))], axis=1)
    ridge = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 5, 15)))
    cv = KFold(5, shuffle=True, random_state=0)
    image_mae = np.abs(cross_val_predict(ridge, np.log(image_regions), age, cv=cv) - age).mean()
    table_mae = np.abs(cross_val_predict(ridge, np.log(tables.roi[:, GMV]), age, cv=cv) - age).mean()
    baseline = np.abs(age - np.median(age)).mean()
    assert image_mae < 0.6 * baseline and image_mae < 1.25 * table_mae, (image_mae, table_mae, baseline)


def test_a_cohort_from_another_generator_version_is_refused(tmp_path):
    write_synthetic_cohort(tmp_path, "oasis3", 6, voxel_size=3.0, seed=0, progress=False)
    meta = tmp_path / "oasis3" / "meta.json"
    meta.write_text(meta.read_text().replace('"generator_version": 2', '"generator_version": 1'))
    with pytest.raises(CohortError, match=r"oasis3/meta.json: field 'provenance.generator_version' is 1"):
        write_synthetic_cohort(tmp_path, "oasis3", 6, voxel_size=3.0, seed=0, progress=False)


def test_schizophrenia_thickness_effects_follow_enigma():
    tables = simulate_tables("schizconnect", 4000, seed=4)
    realised_d = adjusted_cohens_d(tables.participants, tables.roi[:, THICKNESS], ["scz_broad", "scz_strict"])
    r = np.corrcoef(realised_d, cohens_d("schizophrenia", "thickness"))[0, 1]
    assert r > 0.5, f"r {r:.3f}"
    assert realised_d.mean() < 0


def test_alzheimer_grading_and_class_floor():
    tables = simulate_tables("adni", 1200, seed=5)
    entorhinal = [REGIONS.index("lh-entorhinal"), REGIONS.index("rh-entorhinal")]
    thickness = tables.roi[:, THICKNESS][:, entorhinal].mean(axis=1)
    means = [thickness[tables.participants["diagnosis"] == c].mean() for c in ("control", "smci", "pmci", "ad")]
    assert means == sorted(means, reverse=True)
    counts = class_counts(COHORTS["abide1"], 40)
    assert sum(counts.values()) == 40 and min(counts.values()) >= 6


def test_schizconnect_controls_mostly_unrated():
    table = simulate_tables("schizconnect", 300, seed=6).participants
    controls = table["diagnosis"] == "control"
    assert table.loc[controls, "aims_overall"].isna().mean() > 0.7
    assert table.loc[~controls, "aims_overall"].notna().all()
    assert set(table["handedness"].dropna()) <= {"right", "left", "ambidextrous"}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    for folder, seed in (("a", 7), ("b", 7), ("c", 8)):
        write_synthetic_cohort(tmp_path / folder, "abide1", 24, voxel_size=3.0, seed=seed, progress=False)
    files = ("vbm.npy", "desikan_roi.npy", "participants.tsv", "meta.json")
    a, b, c = (tmp_path / f / "abide1" for f in "abc")
    assert all(filecmp.cmp(a / f, b / f, shallow=False) for f in files)
    assert not any(filecmp.cmp(a / f, c / f, shallow=False) for f in ("vbm.npy", "desikan_roi.npy"))


def test_subject_images_do_not_depend_on_order():
    tables = simulate_tables("oasis3", 8, seed=9)
    late_first = render_subject(tables, 5)
    for subject in range(5):
        render_subject(tables, subject)
    assert np.array_equal(late_first, render_subject(tables, 5))


def test_templates_keep_every_region_and_blend_rows_sum_to_one():
    templates = load_templates(3.0)
    counts = np.bincount(templates.region_map.ravel(), minlength=len(REGIONS) + 1)[1:]
    assert (counts > 0).all()
    assert np.allclose(np.asarray(templates.blend.sum(axis=1)).ravel(), 1.0, atol=1e-5)
    assert templates.gm.min() >= 0 and templates.gm.max() <= 1


def test_enigma_tables_in_region_order():
    from anatcl_core.data.enigma import ENIGMA_REGIONS, load_example_subjects
    assert ENIGMA_REGIONS[0] == "L_bankssts" and ENIGMA_REGIONS[34] == "R_bankssts"
    subjects = load_example_subjects()
    assert subjects.thickness.shape == (20, 68) and subjects.area.shape == (20, 68)
    assert list(subjects.thickness.columns) == list(REGIONS)
    assert 1.5 < subjects.thickness.to_numpy().mean() < 3.5
    assert cohens_d("schizophrenia", "thickness").shape == (68,)


def _case_control_table(n: int) -> pd.DataFrame:
    return pd.DataFrame({"age": np.full(n, 40.0), "sex": "F", "site": "s1",
                         "diagnosis": np.where(np.arange(n) % 3 == 0, "scz", "control")})


def test_adjusted_cohens_d_is_the_textbook_d_without_covariate_variation():
    rng = np.random.default_rng(0)
    table = _case_control_table(90)
    measure = np.exp(rng.normal(size=(90, 5)) * 0.1 + 1.0)
    cases = table["diagnosis"].to_numpy() == "scz"
    y = np.log(measure)
    pooled = np.sqrt(((cases.sum() - 1) * y[cases].var(axis=0, ddof=1)
                      + ((~cases).sum() - 1) * y[~cases].var(axis=0, ddof=1)) / (len(y) - 2))
    textbook = (y[cases].mean(axis=0) - y[~cases].mean(axis=0)) / pooled
    np.testing.assert_allclose(adjusted_cohens_d(table, measure, ["scz"]), textbook, rtol=1e-10)


def test_adjusted_cohens_d_removes_an_age_confound_and_ignores_other_diagnoses():
    rng = np.random.default_rng(1)
    n = 4000
    diagnosis = np.where(rng.random(n) < 0.5, "scz", "control")
    diagnosis[:200] = "bipolar"                                      # left out of a scz-vs-control contrast
    age = rng.uniform(20, 70, n) + 10 * (diagnosis == "scz")          # cases older
    table = pd.DataFrame({"age": age, "sex": rng.choice(["M", "F"], n), "site": rng.choice(["a", "b"], n),
                          "diagnosis": diagnosis})
    log_thickness = -0.01 * age - 0.05 * (diagnosis == "scz") + rng.normal(0, 0.1, n)   # true d = -0.5
    log_thickness[diagnosis == "bipolar"] += 5.0
    d = adjusted_cohens_d(table, np.exp(log_thickness)[:, None], ["scz"])
    assert d[0] == pytest.approx(-0.5, abs=0.08)
