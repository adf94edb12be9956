"""When does anatomy help? AnatCL against y-Aware in worlds where healthy anatomy does or does not vary along disease.

Example::

    design = AnatomyDesign.quick()
    tables = run_anatomy_experiment(design, "_build/bench-anatomy-quick")
    tables["anatomy_paired"]          # differences from y-Aware, seed-averaged, with intervals

Per world (`data.synthetic.world.WORLDS`) and seed (cohort, initialisation and batch order all follow it): three
cohorts (a healthy OpenBHB-like one to pretrain on, ADNI- and SchizConnect-like ones to probe) with the disease
effects x `EFFECT_GAIN`; every method pretrained on the healthy cohort (`experiments.pretrain_methods`), frozen,
and probed beside the Desikan table itself:

- adni/ad-vs-hc, schizconnect/scz-broad: out-of-fold predictions, 5 folds shared by every method
  (`paired_probe.out_of_fold_predictions`); balanced accuracy (%);
- openbhb/age: probe fitted on the pretraining rows, scored on the others; MAE.

Each is compared with y-Aware on the same subjects (`paired_probe.paired_bootstrap`, averaged over seeds).
Work goes to <out>/<world>-s<seed>/ (data, runs, embeddings, predictions.npz) and resumes there.
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from anatcl_core.anatomy import RangeNormaliser, select_measures
from anatcl_core.atomic import write_atomic
from anatcl_core.data.cohort import Cohort
from anatcl_core.data.synthetic import write_synthetic_cohorts
from anatcl_core.data.synthetic.model import default_anatomy_model
from anatcl_core.data.synthetic.world import WORLDS, World, measure_alignment
from anatcl_core.figure_layout import panel_grid
from anatcl_core.experiments import method_embeddings, pretrain_methods, run_dir
from anatcl_core.methods import EXTENSIONS, label_of
from anatcl_core.precision import cpu_description
from anatcl_core.paired_probe import held_out_predictions, out_of_fold_predictions, paired_bootstrap, seed_average
from anatcl_core.probe import metric_for, score
from anatcl_core.tasks import TASKS
from anatcl_core.weight_contrast import contrast_table, enigma_descriptors, weightings

EFFECT_GAIN = 2.0
DIAGNOSES = ("adni/ad-vs-hc", "schizconnect/scz-broad")
AGE = "openbhb/age"
REFERENCE = "yaware"
COHORTS = ("openbhb", "adni", "schizconnect")
#: The files `run_anatomy_experiment` returns and `write_results` writes (<name>.csv).
TABLES = ("anatomy", "anatomy_paired", "anatomy_worlds", "anatomy_contrast", "anatomy_timings")


@dataclass(frozen=True)
class AnatomyDesign:
    """What is run: worlds and seeds, methods (y-Aware among them), cohort sizes and the pretraining budget."""
    worlds: tuple[str, ...] = ("orthogonal", "aligned")
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = ("simclr", "yaware", "anatcl-local", "anatcl-global", "anatcl-rbf")
    n_pretrain: int = 160           # the default book's chapter 4 budget: 160 subjects, width 16, 15 epochs
    n_clinical: int = 400           # per clinical cohort: enough for the Desikan table to separate patients
    width: int = 16
    epochs: int = 15
    batch: int = 16
    n_boot: int = 2000

    def __post_init__(self) -> None:
        if REFERENCE not in self.methods:
            raise ValueError(f"methods must include {REFERENCE!r}, the reference of every comparison; "
                             f"got {list(self.methods)}")
        unknown = [w for w in self.worlds if w not in WORLDS]
        if unknown:
            raise ValueError(f"worlds: unknown {unknown}; expected some of {list(WORLDS)}")

    @classmethod
    def quick(cls, **changes) -> "AnatomyDesign":
        """One world, one seed, small cohorts, a short pretraining: minutes on 2 CPU cores."""
        return replace(cls(worlds=("aligned",), seeds=(0,), methods=("simclr", "yaware", "anatcl-local",
                                                                     "anatcl-global"),
                           n_pretrain=64, n_clinical=120, width=8, epochs=2, n_boot=200), **changes)

    def as_dict(self) -> dict:
        return asdict(self) | {"effect_gain": EFFECT_GAIN}


def make_world(out: Path, world: str, seed: int, design: AnatomyDesign) -> Path:
    """The three cohorts of one world and seed under out/<world>-s<seed>/data (kept when already there)."""
    root = Path(out) / f"{world}-s{seed}" / "data"
    sizes = {"openbhb": design.n_pretrain, "adni": design.n_clinical, "schizconnect": design.n_clinical}
    write_synthetic_cohorts(root, sizes, 3.0, seed, cohorts=COHORTS, progress=False,
                            world=World(WORLDS[world], EFFECT_GAIN))
    return root


def world_predictions(root: Path, work: Path, methods, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """{task: {"y": [n], method: [n] predictions}} of every method and the Desikan table on the three tasks."""
    features = method_embeddings(root, work, [*methods, "desikan-table"], 0, cohort_names=COHORTS, progress=False)
    out = {}
    for task_id in DIAGNOSES:
        task = TASKS[task_id]
        rows, y = task.resolve(Cohort.open(root / task.cohort).participants)
        out[task_id] = {"y": y, **{m: out_of_fold_predictions(f[task.cohort][rows], y, task.kind, seed=seed)
                                   for (m, _), f in features.items()}}
    openbhb = Cohort.open(root / "openbhb")
    age = openbhb.participants["age"].to_numpy(float)
    seen = torch.load(run_dir(work, methods[0], 0) / "checkpoint.pth", map_location="cpu",
                      weights_only=True)["rows"].numpy()
    held_out = np.setdiff1d(np.arange(len(openbhb)), seen)
    out[AGE] = {"y": age[held_out], **{m: held_out_predictions(f["openbhb"], age, seen, held_out, "regression", seed)
                                       for (m, _), f in features.items()}}
    return out


def world_contrast(root: Path) -> pd.DataFrame:
    """How discriminative each weighting is on a world's pretraining (training-split) subjects."""
    openbhb = Cohort.open(root / "openbhb")
    train = np.flatnonzero(openbhb.participants["split"].to_numpy() == "train")
    descriptors = select_measures(torch.as_tensor(np.asarray(openbhb.roi)[train], dtype=torch.float64))
    age = torch.tensor(openbhb.participants["age"].to_numpy(float)[train])
    return contrast_table(weightings(RangeNormaliser().fit_transform(descriptors), age)).reset_index()


def run_anatomy_experiment(design: AnatomyDesign, out: str | Path, log=print) -> dict[str, pd.DataFrame]:
    """Run (or resume) every world and seed of `design` under `out` -> {name: table} for each of TABLES."""
    out = Path(out)
    scores, boots, worlds, contrasts, timings = [], {}, [], [], []
    for world in design.worlds:
        for seed in design.seeds:
            started = time.time()
            root, work = make_world(out, world, seed, design), out / f"{world}-s{seed}"
            pretrain_methods(root, work, design.methods, fold=0, width=design.width, epochs=design.epochs,
                             batch_size=design.batch, lr=1e-3, seed=seed, progress=False)
            predicted = world_predictions(root, work, design.methods, seed)
            np.savez(work / "predictions.npz", **{f"{t}|{m}": v for t, p in predicted.items() for m, v in p.items()})
            for task_id, p in predicted.items():
                kind = TASKS[task_id].kind
                for method in [m for m in p if m != "y"]:
                    scores.append({"world": world, "method": method, "seed": seed, "task": task_id,
                                   "metric": metric_for(kind), "score": score(kind, p["y"], p[method]),
                                   "n": len(p["y"])})
                    if method != REFERENCE:
                        boots.setdefault((world, task_id, method), []).append(
                            paired_bootstrap(p["y"], p[method], p[REFERENCE], kind, design.n_boot, seed))
            openbhb = Cohort.open(root / "openbhb")
            worlds.append({"world": world, "alignment": WORLDS[world], "seed": seed,
                           **measure_alignment(openbhb.roi, openbhb.participants, default_anatomy_model())})
            contrasts.append(world_contrast(root).assign(data=f"synthetic {world}", seed=seed))
            timings.append({"world": world, "seed": seed, "seconds": round(time.time() - started, 1)})
            log(json.dumps(timings[-1]))
    descriptors, age = enigma_descriptors()
    contrasts.append(contrast_table(weightings(descriptors, age)).reset_index()
                     .assign(data="ENIGMA example subjects (real)", seed=np.nan))
    paired = pd.DataFrame([{"world": w, "task": t, "metric": metric_for(TASKS[t].kind), "method": m,
                            "minus": REFERENCE, **seed_average(b)} for (w, t, m), b in boots.items()])
    return dict(zip(TABLES, (pd.DataFrame(scores), paired, pd.DataFrame(worlds), pd.concat(contrasts),
                             pd.DataFrame(timings))))


def write_results(tables: dict[str, pd.DataFrame], design: AnatomyDesign, folder: str | Path) -> None:
    """Each table as <folder>/<name>.csv and the design (with the machine and the time) as anatomy_setting.json,
    every file written atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        write_atomic(folder / f"{name}.csv", lambda f, t=table: t.to_csv(f, index=False, float_format="%.6g"))
    setting = design.as_dict() | {"machine": f"{platform.processor() or platform.machine()}; {cpu_description()}",
                                  "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    write_atomic(folder / "anatomy_setting.json", lambda f: f.write(json.dumps(setting, indent=1).encode()))


def read_results(folder: str | Path) -> dict[str, pd.DataFrame] | None:
    """The tables `write_results` wrote in `folder` (None when any is missing) plus "setting" (a dict)."""
    folder = Path(folder)
    paths = {name: folder / f"{name}.csv" for name in TABLES}
    if not all(p.is_file() for p in paths.values()) or not (folder / "anatomy_setting.json").is_file():
        return None
    tables = {name: pd.read_csv(p) for name, p in paths.items()}
    tables["setting"] = json.loads((folder / "anatomy_setting.json").read_text())
    return tables


def paired_table(paired: pd.DataFrame, digits: int = 1) -> pd.DataFrame:
    """anatomy_paired rows -> one row per method, a column per (task, world): 'difference [low, high]'."""
    cells = paired.assign(
        cell=[f"{d:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"
              for d, lo, hi in zip(paired["difference"], paired["low"], paired["high"])],
        method=paired["method"].map(label_of))
    table = cells.pivot_table(index="method", columns=["task", "world"], values="cell", aggfunc="first")
    return table.reindex(columns=sorted(table.columns, key=lambda c: (c[0] == AGE, c[0], c[1])))


def score_table(scores: pd.DataFrame, digits: int = 1) -> pd.DataFrame:
    """anatomy rows -> one row per method, a column per (task, world): 'mean ± SD over seeds' of the score."""
    stats = scores.groupby(["method", "task", "world"], sort=False)["score"].agg(["mean", "std", "count"]).reset_index()
    stats["cell"] = [f"{m:.{digits}f}" + (f" ± {sd:.{digits}f}" if n > 1 else "")
                     for m, sd, n in zip(stats["mean"], stats["std"], stats["count"])]
    stats["method"] = stats["method"].map(label_of)
    table = stats.pivot_table(index="method", columns=["task", "world"], values="cell", aggfunc="first")
    order = [label_of(m) for m in dict.fromkeys(scores["method"])]
    return table.reindex(index=order, columns=sorted(table.columns, key=lambda c: (c[0] == AGE, c[0], c[1])))


def _verdict(row: pd.Series) -> str:
    """'better' / 'worse' than y-Aware (interval excludes 0; for MAE lower is better), else 'no difference'."""
    sign = -1.0 if row["metric"] == "mae" else 1.0
    low, high = sorted((sign * row["low"], sign * row["high"]))
    return "better" if low > 0 else "worse" if high < 0 else "no difference"


def verdicts(paired: pd.DataFrame) -> pd.DataFrame:
    """anatomy_paired rows + `verdict`: each method against y-Aware, as its paired interval says."""
    return paired.assign(verdict=[_verdict(row) for _, row in paired.iterrows()])


def prediction_markdown(paired: pd.DataFrame, methods=("anatcl-local", "anatcl-global")) -> str:
    """The prediction (AnatCL beats y-Aware on diagnosis in the aligned world, not in the orthogonal one) checked
    against the paired intervals, one bullet per world and diagnosis, and a one-line overall answer."""
    judged = verdicts(paired[paired["task"].isin(DIAGNOSES) & paired["method"].isin(methods)])
    lines, beats, worse = [], {}, []
    for (world, task), cell in judged.groupby(["world", "task"], sort=False):
        beats[(world, task)] = bool((cell["verdict"] == "better").any())
        worse += [f"{label_of(r.method)} on {TASKS[task].group} {TASKS[task].label} in the {world} world"
                  for r in cell.itertuples() if r.verdict == "worse"]
        parts = [f"{label_of(r.method)} {r.difference:+.1f} points [{r.low:+.1f}, {r.high:+.1f}], {r.verdict}"
                 for r in cell.itertuples()]
        detectable = cell["detectable"].max()
        lines.append(f"- **{world}**, {TASKS[task].group} {TASKS[task].label}: " + "; ".join(parts)
                     + f" (detectable: about {detectable:.0f} points)")
    aligned = [v for (w, _), v in beats.items() if w == "aligned"]
    orthogonal = [v for (w, _), v in beats.items() if w == "orthogonal"]
    if not aligned or not orthogonal:
        ran = "aligned" if aligned else "orthogonal"
        overall = (f"Only the {ran} world was run, so the prediction, a contrast between two worlds, is not tested "
                   f"here; in it AnatCL beat y-Aware on {sum(aligned or orthogonal)} of "
                   f"{len(aligned or orthogonal)} diagnoses.")
    elif all(aligned) and not any(orthogonal):
        overall = "The prediction held: AnatCL beat y-Aware on diagnosis in the aligned world and not in the orthogonal one."
    elif any(aligned) and not any(orthogonal):
        overall = ("The prediction held in part: AnatCL beat y-Aware on some diagnoses in the aligned world, none in "
                   "the orthogonal one.")
    elif not any(aligned) and not any(orthogonal):
        overall = ("The prediction did not hold: AnatCL beat y-Aware on no diagnosis in either world, by more than "
                   "the design can detect.")
    else:
        overall = ("The prediction did not hold: AnatCL beat y-Aware in the orthogonal world too, where the "
                   "prediction said it would not.")
    if worse:
        overall += (f" AnatCL was worse than y-Aware, with an interval clear of 0, in {len(worse)} of "
                    f"{len(judged)} comparisons: {'; '.join(worse)}.")
    return "\n".join([*lines, "", overall])


def reading_markdown(scores: pd.DataFrame, paired: pd.DataFrame) -> str:
    """What else the run says, written from it: whether the aligned world hides the diagnoses from every method,
    how far the encoders sit below the Desikan table, how each world moves the table itself, and the verdicts
    of the methods beyond the paper against y-Aware."""
    means = scores.groupby(["world", "task", "method"])["score"].mean()
    worlds = list(dict.fromkeys(scores["world"]))
    lead, lines, gaps = [], [], []
    for task in DIAGNOSES:
        name = f"{TASKS[task].group} {TASKS[task].label}"
        by_world = {w: means[w][task] for w in worlds if task in means[w]}
        table = {w: m["desikan-table"] for w, m in by_world.items() if "desikan-table" in m}
        best = {w: m.drop("desikan-table", errors="ignore").max() for w, m in by_world.items()}
        gaps += [(task, w, table[w] - best[w]) for w in table]
        if table:
            lines.append(f"- {name}: the Desikan table itself scores "
                         + ", ".join(f"{table[w]:.1f} % in the {w} world" for w in table)
                         + "; the best encoder " + ", ".join(f"{best[w]:.1f} %" for w in table) + ".")
    if {"aligned", "orthogonal"} <= set(worlds):
        both = [t for t in DIAGNOSES if t in means["aligned"] and t in means["orthogonal"]]
        pairs = [(m, means["aligned"][t][m] < means["orthogonal"][t][m]) for t in both
                 for m in means["aligned"][t].index.intersection(means["orthogonal"][t].index)]
        if pairs and all(lower for _, lower in pairs):
            table_too = ", the Desikan table included" if any(m == "desikan-table" for m, _ in pairs) else ""
            verb = "is" if len(both) == 1 else "are"
            lead.append(f"In the aligned world, where healthy people already vary along the disease axes, "
                        f"{_names(both)} {verb} harder to see for every method{table_too}.")
        elif pairs:
            lead.append(f"In the aligned world {sum(lower for _, lower in pairs)} of {len(pairs)} (diagnosis, "
                        "method) scores are lower than in the orthogonal world.")
    if gaps and min(g for _, _, g in gaps) > 0:
        ranges = {w: [g for _, v, g in gaps if v == w] for w in dict.fromkeys(w for _, w, _ in gaps)}
        lead.append(f"The best encoder sits below the Desikan table on {_names(dict.fromkeys(t for t, _, _ in gaps))}: "
                    + ", ".join(f"by {min(r):.1f} to {max(r):.1f} points in the {w} world" for w, r in ranges.items())
                    + ".")
    elif gaps:
        lead.append(f"The best encoder reaches the Desikan table in {sum(g <= 0 for _, _, g in gaps)} of {len(gaps)} "
                    "(diagnosis, world) cells.")
    extension = verdicts(paired[paired["method"].isin(EXTENSIONS)])
    for method, rows in extension.groupby("method", sort=False):
        said = "; ".join(f"{TASKS[r.task].group} {TASKS[r.task].label}, {r.world}: {r.difference:+.1f} "
                         f"[{r.low:+.1f}, {r.high:+.1f}], {r.verdict}" for r in rows.itertuples())
        lines.append(f"- {label_of(method)} against y-Aware: {said}.")
    return "\n\n".join([*lead, "\n".join(lines)] if lines else lead)


def _names(tasks) -> str:
    """'ADNI HC vs AD and SchizConnect SCZ. (Broad)' for task ids."""
    names = [f"{TASKS[t].group} {TASKS[t].label}" for t in tasks]
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


DIFFERENCE_WORDS = {"balanced_accuracy": "balanced accuracy minus y-Aware's\n(% points; above 0: better)",
                    "mae": "age MAE minus y-Aware's\n(years; below 0: better)"}


def plot_paired(paired: pd.DataFrame, tasks=(*DIAGNOSES, AGE)):
    """One panel per task (at most 3 per row): each method's paired difference from y-Aware with its 95 %
    interval, one colour per world, a zero line. Returns the figure."""
    fig, axes = panel_grid(len(tasks), panel_size=(4.2, 3.6))
    worlds = list(dict.fromkeys(paired["world"]))
    for ax, task in zip(axes, tasks):
        cell = paired[paired["task"] == task]
        methods = list(dict.fromkeys(cell["method"]))
        for k, world in enumerate(worlds):
            rows = cell[cell["world"] == world].set_index("method").reindex(methods)
            y = np.arange(len(methods)) + (k - (len(worlds) - 1) / 2) * 0.25
            ax.errorbar(rows["difference"], y, xerr=[rows["difference"] - rows["low"], rows["high"] - rows["difference"]],
                        fmt="o", capsize=3, label=world)
        ax.axvline(0, color="0.3", lw=1)
        ax.set_yticks(np.arange(len(methods)), [label_of(m) for m in methods])
        ax.set_xlabel(DIFFERENCE_WORDS[TASKS[task].metric])
        ax.set_title(f"{TASKS[task].group}: {TASKS[task].label}")
    axes[0].legend(title="world", fontsize=9)
    fig.tight_layout()
    return fig
