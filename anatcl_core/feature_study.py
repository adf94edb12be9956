"""Which Desikan measure predicts age best? The paper's feature-selection study (appendix A.2, Table 6).

For each of six OpenBHB measures, a ridge regression from its 68 regional values to age, scored by
cross-validated MAE (years) and R^2. The paper used the result to pick the measures AnatCL's
descriptors are built from (GMV and surface area, plus thickness by convention).

Example::

    study = age_from_measures(cohort.roi, cohort.participants)   # roi [N, 7, 68]
    feature_table(study)                                         # beside the paper's Table 6
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import cross_validate
from threadpoolctl import threadpool_limits

from anatcl_core.anatomy import CHANNELS
from anatcl_core.probe import make_probe
from anatcl_core.probe_folds import cv_splits
from anatcl_core.tasks import paper_results

#: Table 6's measures (its task-id suffix) -> OpenBHB Desikan channel, in the table's column order.
TABLE6_MEASURES: dict[str, str] = {
    "thickness_mean": "average_thickness_mm",
    "gray_matter_volume": "gray_matter_volume_mm^3",
    "surface_area": "surface_area_mm^2",
    "integrated_mean_curvature": "integrated_rectified_mean_curvature_mm^-1",
    "gaussian_curvature_index": "integrated_rectified_gaussian_curvature_mm^-2",
    "intrinsic_curvature_index": "intrinsic_curvature_index",
}

#: Column headers as the paper prints them.
TABLE6_LABELS: dict[str, str] = {
    "thickness_mean": "CT (mean)", "gray_matter_volume": "GMV", "surface_area": "Surf. Area",
    "integrated_mean_curvature": "Int. Mean", "gaussian_curvature_index": "Gauss. Curv. Index",
    "intrinsic_curvature_index": "Intr. Curv. Index",
}

_SCORERS = {"mae": "neg_mean_absolute_error", "r2": "r2"}


def task_id(measure: str) -> str:
    """Table 6 task id of a measure, as in paper_tables.csv: 'openbhb/age[surface_area]'."""
    return f"openbhb/age[{measure}]"


def age_from_measures(roi: np.ndarray, participants: pd.DataFrame, *, n_splits: int = 5, seed: int = 0,
                      grid: list[float] | None = None, inner_splits: int = 3, train_only: bool = True,
                      ) -> pd.DataFrame:
    """Cross-validated ridge from each measure's 68 regions to age.

    roi: [N, 7, 68] OpenBHB table (row i = participants row i); participants: needs `age`, and `split`
    when `train_only` (then only `split == "train"` rows are used, keeping OpenBHB's test splits unseen).
    Folds are stratified on age quantiles; scaler and alpha are fitted inside each training fold.
    Returns one row per (measure, metric): task, measure, channel, metric ("mae" years / "r2"), mean, std, n.
    """
    roi = np.asarray(roi, dtype=np.float64)
    if roi.ndim != 3 or roi.shape[1:] != (len(CHANNELS), 68) or len(roi) != len(participants):
        raise ValueError(f"expected roi [N, 7, 68] with N = {len(participants)} participants rows; "
                         f"got {list(roi.shape)}")
    rows = np.arange(len(participants))
    if train_only:
        if "split" not in participants.columns:
            raise KeyError("age_from_measures: participants has no 'split' column; pass train_only=False "
                           "to use every row")
        rows = np.flatnonzero(participants["split"].to_numpy() == "train")
    age = participants["age"].to_numpy(dtype=np.float64)[rows]
    splits = cv_splits(age, "regression", n_splits, seed=seed)
    records = []
    for measure, channel in TABLE6_MEASURES.items():
        features = roi[rows, CHANNELS.index(channel), :]
        with threadpool_limits(limits=1, user_api="blas"):     # many small fits: threads only add contention
            scores = cross_validate(make_probe("regression", grid, cv=inner_splits), features, age,
                                    cv=splits, scoring=_SCORERS)
        for metric in _SCORERS:
            values = scores[f"test_{metric}"] * (-1 if metric == "mae" else 1)
            records.append({"task": task_id(measure), "measure": measure, "channel": channel, "metric": metric,
                            "mean": values.mean(), "std": values.std(), "n": len(rows)})
    return pd.DataFrame(records)


def _cell(values: pd.DataFrame, task: str, metric: str, digits: int) -> str:
    if (task, metric) not in values.index:
        return "—"
    row = values.loc[(task, metric)]
    return f"{row['mean']:.{digits}f} ± {row['std']:.{digits}f}"


def feature_table(ours: pd.DataFrame | None = None, digits: int = 2) -> pd.DataFrame:
    """The paper's Table 6 as "mean ± std" strings: rows MAE (years) and R^2, columns its six measures.

    The paper prints negative MAE; this table shows MAE as a positive number of years. With `ours`
    (from `age_from_measures`) rows come in pairs: paper, ours.
    """
    paper = paper_results().query("table == 6").set_index(["task", "metric"])
    sources = {"paper": paper}
    if ours is not None:
        sources["ours"] = ours.set_index(["task", "metric"])
    body = {}
    for metric, metric_label in (("mae", "MAE (years)"), ("r2", "R^2")):
        for source, values in sources.items():
            body[(metric_label, source)] = [_cell(values, task_id(m), metric, digits) for m in TABLE6_MEASURES]
    frame = pd.DataFrame(body, index=[TABLE6_LABELS[m] for m in TABLE6_MEASURES]).T
    frame.index = pd.MultiIndex.from_tuples(frame.index, names=["metric", "source"])
    return frame
