"""Probe results kept under a hash of everything that decides them: re-probing unchanged features costs nothing.

Tables are probed again after every change upstream (one method retrained, another protocol, a chapter run
alone), yet most (method, fold, task) probes then see the same features as last time. `ProbeCache` keeps what
`evaluation.evaluate_task` returned as `<root>/<key>.json`, the key being a SHA-256 of

- the features of the task's cohort (dtype, shape, bytes) and its participants table (column names, dtypes,
  index, values and, in text columns, each value's type),
- the task's definition and the probe options, each default filled in (`cross_validate_probe`'s) and every
  object spelled out with its type (the protocol with every field),
- the source of the modules that compute a probe (`RESULT_MODULES`, as this process imported them) and the
  versions of the numerical libraries,

so a change to anything a result depends on misses the cache, and a stale result is never read. The method and
fold names are not in the key: they label rows, they do not change scores. Nor is the CPU: the probe computes
the same numbers on every machine (the book's precision policy). What cannot be spelled out exactly (an
option of an unknown type, a participants cell that pandas cannot hash) is probed without the cache. An
unreadable entry is probed again and rewritten; a folder that cannot be used is warned about once, and the
probes run as without a cache. Every code change starts new keys, so entries that no run has read or written
for `UNUSED_ENTRY_S` (30 days) are removed when a cache is opened: a cache holds what is in use, and deleting
it is always safe.

Example::

    evaluate_tasks(embeddings, cohorts, cache="outputs/probes")      # a rerun probes only what changed
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import inspect
import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from anatcl_core.atomic import remove_stale_files, write_atomic
from anatcl_core.probe import ProbeResult, cross_validate_probe
from anatcl_core.probe_protocol import get_protocol

log = logging.getLogger(__name__)

#: The modules whose code decides a probe's result (or reads it back): an edit to any of them starts the cache
#: afresh.
RESULT_MODULES = ("anatcl_core.evaluation", "anatcl_core.probe", "anatcl_core.probe_search",
                  "anatcl_core.probe_folds", "anatcl_core.probe_protocol", "anatcl_core.logistic_path",
                  "anatcl_core.tasks", "anatcl_core.probe_cache")
#: Libraries whose version is part of the key (their arithmetic decides the last digits).
LIBRARIES = ("numpy", "scipy", "sklearn", "pandas")
#: Probe options that change how fast a probe runs, not what it returns: left out of the key.
NEUTRAL_OPTIONS = ("n_jobs",)
#: An entry neither read nor written for this long (s) is removed when a cache is opened (its mtime is renewed on
#: every read).
UNUSED_ENTRY_S = 30 * 24 * 3600
_ENTRY_GLOB = "[0-9a-f]" * 64 + ".json"                # `_path` of a key: a SHA-256 in hex

#: The options `evaluate_task` passes on, with their defaults: given or not, a default is one key.
DEFAULT_OPTIONS = {name: p.default for name, p in inspect.signature(cross_validate_probe).parameters.items()
                   if p.default is not inspect.Parameter.empty and name not in ("groups", *NEUTRAL_OPTIONS)}


def _code_digest() -> str:
    """SHA-256 of the source files of `RESULT_MODULES` and the versions of `LIBRARIES`."""
    digest = hashlib.sha256()
    for name in RESULT_MODULES:
        digest.update(Path(importlib.util.find_spec(name).origin).read_bytes())
    for name in LIBRARIES:
        digest.update(f"{name} {importlib.import_module(name).__version__}\n".encode())
    return digest.hexdigest()


#: Read when this module is imported, with the probe's modules: the code this process runs, even if the files
#: are edited afterwards (a notebook open across a `git pull`).
CODE_DIGEST = _code_digest()


def array_digest(X: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and bytes (C order)."""
    X = np.asarray(X)
    return hashlib.sha256(f"{X.dtype.str} {X.shape}\n".encode() + X.tobytes()).hexdigest()


def table_digest(table: pd.DataFrame) -> str:
    """SHA-256 of a table's column names, dtypes, index and values (pandas' row hashes), and of the type of each
    value in text (object) columns, which pandas hashes by their text (1 and "1" alike). TypeError for cells
    pandas cannot hash (lists, dicts)."""
    digest = hashlib.sha256(json.dumps([[str(c), str(t)] for c, t in table.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(table, index=True).to_numpy().tobytes())
    for column in table.columns[table.dtypes == object]:
        digest.update(" ".join(type(v).__qualname__ for v in table[column]).encode())
    return digest.hexdigest()


def spelled(value: Any) -> Any:
    """`value` as plain JSON data that tells apart what a probe would: dataclasses with their type and fields,
    sequences and arrays as lists of every digit. TypeError for anything else (no lossy repr)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"type": f"{type(value).__module__}.{type(value).__qualname__}",
                **{f.name: spelled(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    if isinstance(value, (np.ndarray, np.generic, pd.Series, pd.Index)):
        return spelled(value.tolist())
    if isinstance(value, (list, tuple)):
        return [spelled(v) for v in value]
    if isinstance(value, dict):
        return {str(k): spelled(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"no exact spelling of a {type(value).__name__} for the probe cache")


def options_text(task: Any, options: Mapping[str, Any]) -> str:
    """The task's definition and the probe options (defaults filled in, the protocol in full) as canonical
    JSON; TypeError when some option has no exact spelling (`spelled`)."""
    options = {**DEFAULT_OPTIONS, **{k: v for k, v in options.items() if k not in NEUTRAL_OPTIONS}}
    options["protocol"] = get_protocol(options["protocol"])
    return json.dumps(spelled({"task": task, "options": options}), sort_keys=True)


@dataclasses.dataclass
class ProbeCache:
    """`evaluate_task` results on disk, one JSON file per key (`key`), under `root`.

    Features and tables are hashed once per object while the cache lives: make one per `evaluate_tasks` call
    (as it does), not one across changes made in place.
    """

    root: Path
    _digests: dict = dataclasses.field(default_factory=dict, repr=False)   # id(X) -> (X, digest): X kept alive
    _warned: bool = dataclasses.field(default=False, repr=False)

    def __post_init__(self) -> None:
        if not str(self.root):
            raise ValueError("cache: an empty path; expected a folder for the probe results")
        self.root = Path(self.root)
        # only files named as this cache names them: the folder may hold a user's own files
        remove_stale_files(self.root, f".{_ENTRY_GLOB}.*.tmp")                  # of saves killed midway
        remove_stale_files(self.root, _ENTRY_GLOB, UNUSED_ENTRY_S)

    def key(self, X: np.ndarray, participants: pd.DataFrame, task: Any, options: Mapping[str, Any]) -> str | None:
        """The key of probing `task` on features X [N, d] of a cohort with `participants` [N rows], or None
        when some input has no exact digest (that probe then runs without the cache)."""
        try:
            parts = [self._digest(X), self._digest(participants), options_text(task, options), CODE_DIGEST]
        except TypeError as err:
            log.warning("probe cache: %s probed without the cache (%s)", getattr(task, "id", task), err)
            return None
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def load(self, key: str, names: Sequence[str]) -> dict[str, ProbeResult] | None:
        """The results saved under `key` ({evaluation name: ProbeResult}, exactly the evaluations `names`), or
        None when absent or unreadable."""
        path = self._path(key)
        if not os.path.isfile(path):            # False, not an error, for a folder it cannot enter too
            return None
        try:
            saved = json.loads(path.read_text())["results"]
            if not isinstance(saved, dict) or list(saved) != list(names):
                raise ValueError(f"evaluations {list(saved)[:3] if isinstance(saved, dict) else saved!r}, "
                                 f"expected {list(names)}")
            results = {name: _result(fields) for name, fields in saved.items()}
        except (OSError, ValueError, TypeError, KeyError) as err:
            log.warning("probe cache: %s is unreadable (%s); probing again", path, err)
            return None
        try:
            os.utime(path)                      # in use: not swept as unused
        except OSError:
            pass                                # a read-only cache still serves
        return results

    def save(self, key: str, results: Mapping[str, ProbeResult], about: str = "") -> None:
        """Keep `results` under `key`; `about` (e.g. "simclr fold 0, adni/ad-vs-hc") is stored for a reader."""
        text = json.dumps({"about": about, "results": {n: spelled(dataclasses.asdict(r)) for n, r in results.items()}},
                          allow_nan=True)
        try:
            write_atomic(self._path(key), lambda f: f.write(text.encode()))
        except OSError as err:
            if not self._warned:
                log.warning("probe cache: cannot write in %s (%s); results are not kept", self.root, err)
                self._warned = True

    def _path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def _digest(self, value: np.ndarray | pd.DataFrame) -> str:
        if id(value) not in self._digests:
            digest = table_digest(value) if isinstance(value, pd.DataFrame) else array_digest(value)
            self._digests[id(value)] = (value, digest)
        return self._digests[id(value)][1]


#: The type of each ProbeResult field as JSON gives it back (tuples come back as lists of these).
_FIELD_TYPES = {"metric": str, "scores": float, "n_samples": int, "n_splits": int, "n_repeats": int,
                "class_counts": int, "best_params": float, "note": str, "evaluable": bool, "edge_folds": int}
_TUPLE_FIELDS = ("scores", "class_counts", "best_params")


def _result(fields: Any) -> ProbeResult:
    """A ProbeResult from its saved fields, each checked against `_FIELD_TYPES`; ValueError otherwise."""
    if not isinstance(fields, dict) or set(fields) != set(_FIELD_TYPES):
        raise ValueError(f"fields {sorted(fields) if isinstance(fields, dict) else fields!r}, expected "
                         f"{sorted(_FIELD_TYPES)}")
    for name, kind in _FIELD_TYPES.items():
        items = fields[name] if name in _TUPLE_FIELDS else [fields[name]]
        # exact types (json.loads gives bool, int, float, str, list; bool is no int here); an int serves as a float
        if not isinstance(items, list) or not all(type(v) is kind or (kind is float and type(v) is int)
                                                  for v in items):
            raise ValueError(f"field {name!r} holds {fields[name]!r:.40}, expected "
                             f"{'a list of ' if name in _TUPLE_FIELDS else ''}{kind.__name__}")
    return ProbeResult(**{k: tuple(v) if k in _TUPLE_FIELDS else v for k, v in fields.items()})
