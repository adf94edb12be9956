"""Probe results kept under a hash of everything that decides them: re-probing unchanged features costs nothing.

Tables are probed again after every change upstream (one method retrained, another protocol, a chapter run
alone), yet most (method, fold, task) probes then see the same features as last time. `ProbeCache` keeps what
`evaluation.evaluate_task` returned as `<root>/<key>.json`, the key being a SHA-256 of

- the features of the task's cohort (dtype, shape, bytes) and its participants table (values, columns, dtypes),
- the task's definition and the probe options (the protocol with every field, seed, folds, grid, ...),
- the source of the modules that compute a probe (`RESULT_MODULES`) and the versions of the numerical libraries,

so a change to anything a result depends on misses the cache, and a stale result is never read. The method and
fold names are not in the key: they label rows, they do not change scores. An unreadable entry is probed again
and rewritten; a folder that cannot be written is warned about once, and the probes run as without a cache.

Example::

    evaluate_tasks(embeddings, cohorts, cache="outputs/probes")      # a rerun probes only what changed
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from anatcl_core.atomic import write_atomic
from anatcl_core.probe import ProbeResult
from anatcl_core.probe_protocol import get_protocol

log = logging.getLogger(__name__)

#: The modules whose code decides a probe's result: an edit to any of them starts the cache afresh.
RESULT_MODULES = ("anatcl_core.evaluation", "anatcl_core.probe", "anatcl_core.probe_search",
                  "anatcl_core.probe_folds", "anatcl_core.probe_protocol", "anatcl_core.logistic_path",
                  "anatcl_core.tasks")
#: Libraries whose version is part of the key (their arithmetic decides the last digits).
LIBRARIES = ("numpy", "scipy", "sklearn", "pandas")
#: Probe options that change how fast a probe runs, not what it returns: left out of the key.
NEUTRAL_OPTIONS = ("n_jobs",)
#: Age (s) after which a hidden temporary file in the cache folder is a killed save's, and removed.
STALE_SECONDS = 3600


@functools.cache
def code_digest() -> str:
    """SHA-256 of the source of `RESULT_MODULES` and the versions of `LIBRARIES` in this process."""
    digest = hashlib.sha256()
    for name in RESULT_MODULES:
        digest.update(Path(importlib.import_module(name).__file__).read_bytes())
    for name in LIBRARIES:
        digest.update(f"{name} {importlib.import_module(name).__version__}\n".encode())
    return digest.hexdigest()


def array_digest(X: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and bytes (C order)."""
    X = np.asarray(X)
    return hashlib.sha256(f"{X.dtype.str} {X.shape}\n".encode() + X.tobytes()).hexdigest()


def table_digest(table: pd.DataFrame) -> str:
    """SHA-256 of a table's column names, dtypes, index and values (pandas' row hashes)."""
    digest = hashlib.sha256(json.dumps([[str(c), str(t)] for c, t in table.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(table, index=True).to_numpy().tobytes())
    return digest.hexdigest()


def options_text(task: Any, options: Mapping[str, Any]) -> str:
    """The task's definition and the probe options as canonical JSON; the protocol spelled out in full."""
    options = {k: v for k, v in options.items() if k not in NEUTRAL_OPTIONS}
    options["protocol"] = dataclasses.asdict(get_protocol(options.get("protocol", "ours")))
    return json.dumps({"task": dataclasses.asdict(task), "options": options}, sort_keys=True, default=_plain)


def _plain(value: Any) -> Any:
    """JSON for what json does not know: numpy arrays and scalars as Python lists and numbers (every digit),
    anything else by its repr."""
    return value.tolist() if isinstance(value, (np.ndarray, np.generic)) else repr(value)


@dataclasses.dataclass
class ProbeCache:
    """`evaluate_task` results on disk, one JSON file per key (`key`), under `root`."""

    root: Path
    _digests: dict = dataclasses.field(default_factory=dict, repr=False)   # id(X) -> (X, digest): X kept alive
    _warned: bool = dataclasses.field(default=False, repr=False)

    def __post_init__(self) -> None:
        # A process killed mid-save leaves write_atomic's hidden temporary file. A save takes milliseconds, so
        # one an hour old belongs to no live process (were it one, that save would fail and only warn).
        if self.root is None or not Path(self.root).is_dir():
            return
        for tmp in Path(self.root).glob(".*.json.*.tmp"):
            try:
                if time.time() - tmp.stat().st_mtime > STALE_SECONDS:
                    tmp.unlink()
            except OSError:
                pass

    def key(self, X: np.ndarray, participants: pd.DataFrame, task: Any, options: Mapping[str, Any]) -> str:
        """The key of probing `task` on features X [N, d] of a cohort with `participants` [N rows]."""
        parts = [self._digest(X), self._digest(participants), options_text(task, options), code_digest()]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def load(self, key: str) -> dict[str, ProbeResult] | None:
        """The results saved under `key` ({evaluation name: ProbeResult}), or None when absent or unreadable."""
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            saved = json.loads(path.read_text())
            return {name: ProbeResult(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
                    for name, fields in saved["results"].items()}
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
            log.warning("probe cache: %s is unreadable (%s); probing again", path, err)
            return None

    def save(self, key: str, results: Mapping[str, ProbeResult], about: str = "") -> None:
        """Keep `results` under `key`; `about` (e.g. "simclr fold 0, adni/ad-vs-hc") is stored for a reader."""
        text = json.dumps({"about": about, "results": {n: dataclasses.asdict(r) for n, r in results.items()}},
                          default=_plain)
        try:
            write_atomic(self._path(key), lambda f: f.write(text.encode()))
        except OSError as err:
            if not self._warned:
                log.warning("probe cache: cannot write in %s (%s); results are not kept", self.root, err)
                self._warned = True

    def _path(self, key: str) -> Path:
        return Path(self.root) / f"{key}.json"

    def _digest(self, value: np.ndarray | pd.DataFrame) -> str:
        if id(value) not in self._digests:
            digest = table_digest(value) if isinstance(value, pd.DataFrame) else array_digest(value)
            self._digests[id(value)] = (value, digest)
        return self._digests[id(value)][1]
