"""The six pretraining methods of the paper, described once: every other module reads this registry.

Example::

    METHODS["anatcl-local"].label          # 'AnatCL-L3', the paper's row label
    method_ids()                           # ('simclr', 'l1', 'yaware', 'expw', 'anatcl-global', 'anatcl-local')

A method's `objective` names the loss the engine computes (`pretrain.compute_loss`):
"nt-xent" (SimCLR), "l1" (regression of standardised age), "yaware" and "expw" (the weighted contrastive
loss with an RBF age kernel, `losses.weighted_contrastive_loss`), "anatcl" (the age term plus an
anatomical term with `descriptor` "local" or "global", `losses.anatcl_loss`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

Objective = Literal["nt-xent", "l1", "yaware", "expw", "anatcl"]


@dataclass(frozen=True)
class Method:
    """One pretraining method: our id, the paper's label, and what its loss reads."""

    id: str
    label: str                         # the paper's row label in Tables 2-5
    objective: Objective
    uses_age: bool                     # the loss reads the subjects' ages
    descriptor: Optional[str] = None   # AnatCL's anatomical descriptor: "local" (Eq. 2), "global" (Eq. 3), "rbf"
    extension: bool = False            # ours, beyond the paper: never a row of the paper's tables

    @property
    def uses_descriptors(self) -> bool:
        """The loss reads the Desikan descriptors (AnatCL only)."""
        return self.descriptor is not None

    @property
    def released(self) -> Optional[str]:
        """The name of the authors' released weights for this method ("global"/"local"), or None."""
        return None if self.extension else self.descriptor


#: In the paper's row order.
METHODS: dict[str, Method] = {m.id: m for m in (
    Method("simclr", "SimCLR", "nt-xent", uses_age=False),
    Method("l1", "L1", "l1", uses_age=True),
    Method("yaware", "y-Aware", "yaware", uses_age=True),
    Method("expw", "ExpW", "expw", uses_age=True),
    Method("anatcl-global", "AnatCL-G3", "anatcl", uses_age=True, descriptor="global"),
    Method("anatcl-local", "AnatCL-L3", "anatcl", uses_age=True, descriptor="local"),
)}

#: Methods beyond the paper, trained only where asked for by name (benchmarks/bench_anatomy.py): AnatCL with an RBF
#: kernel on the distance between range-normalised descriptors (`anatomy.rbf_similarity`), as sharp as the age
#: kernel, instead of the paper's nearly uniform cosines.
EXTENSIONS: dict[str, Method] = {m.id: m for m in (
    Method("anatcl-rbf", "AnatCL-RBF (extension)", "anatcl", uses_age=True, descriptor="rbf", extension=True),
)}

#: The paper's method ids -> its row labels, in its row order: the rows of the paper's tables and rankings
#: (extensions are never among them; `label_of` knows their labels).
METHOD_LABELS: dict[str, str] = {m.id: m.label for m in METHODS.values()}

#: The descriptors for which the authors released weights ("global", "local").
RELEASED_DESCRIPTORS: tuple[str, ...] = tuple(m.released for m in METHODS.values() if m.released)


#: The authors' released encoders as rows of the tables: 'released-global' and 'released-local', read from the
#: weights cache (`anatcl_core.released`), never pretrained here; one per released pretraining fold.
RELEASED_METHODS: dict[str, str] = {f"released-{d}": d for d in RELEASED_DESCRIPTORS}
RELEASED_SUFFIX = " (released)"

#: Reference rows of the tables, never pretrained: an encoder at its random initialisation (seeded as the runs
#: are), and the cohort's own Desikan measures, log thickness, grey-matter volume and surface area of the 68
#: regions (what the anatomy tables alone give a linear probe, with no image at all).
BASELINES: dict[str, str] = {"random-init": "untrained encoder", "desikan-table": "Desikan table"}


def method_ids(extensions: bool = False) -> tuple[str, ...]:
    """Every method id of the paper, in its row order (then ours beyond it, with `extensions=True`)."""
    return (*METHODS, *EXTENSIONS) if extensions else tuple(METHODS)


def get_method(method_id: str) -> Method:
    """The registry entry of `method_id` (a paper method or an extension); ValueError naming the known ids otherwise."""
    found = METHODS.get(method_id) or EXTENSIONS.get(method_id)
    if found is None:
        raise ValueError(f"method: expected one of {method_ids(extensions=True)}, got {method_id!r}")
    return found


def released_descriptor(method_id: str) -> Optional[str]:
    """'released-global' -> 'global' (the authors' weights); None for a method this project pretrains."""
    return RELEASED_METHODS.get(method_id)


def label_of(method_id: str) -> str:
    """The paper's label of a method id ('AnatCL-G3 (released)' for the authors' weights); an id the paper
    does not have is its own label."""
    descriptor = released_descriptor(method_id)
    if descriptor is not None:
        return next(m.label for m in METHODS.values() if m.released == descriptor) + RELEASED_SUFFIX
    if method_id in EXTENSIONS:
        return EXTENSIONS[method_id].label
    return METHOD_LABELS.get(method_id, BASELINES.get(method_id, method_id))


def paper_row_of(label: str) -> str:
    """The paper's row a table label is compared with: 'AnatCL-G3 (released)' -> 'AnatCL-G3' (the weights
    behind the paper's numbers); any other label is its own row."""
    return label.removesuffix(RELEASED_SUFFIX)


def method_in_name(name: str) -> Optional[str]:
    """The method id that `name` is or starts with (then '-' or '_'), the longest such; None if none.

    'anatcl-local-fold0' -> 'anatcl-local'; 'yaware_seed1' -> 'yaware'; 'runs' -> None.
    """
    name = name.lower()
    ids = [m for m in method_ids(extensions=True) if name == m or name.startswith((f"{m}-", f"{m}_"))]
    return max(ids, key=len) if ids else None
