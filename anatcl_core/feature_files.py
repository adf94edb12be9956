"""Feature tables on disk: one row per subject, `participant_id` then `feature_000`, `feature_001`, ...

The format follows the file name's extension::

  .tsv / .csv   text, tab- or comma-separated, floats written with 9 significant digits (float32 round-trips)
  .parquet      Apache Parquet, written by pyarrow (an optional dependency: `pip install pyarrow`)
  .npy          the [N, D] float32 array alone, plus a sidecar `<stem>.ids.tsv` with the `participant_id` column

Every file is written atomically (`anatcl_core.atomic.write_atomic`): a killed run leaves the previous file, or
none, never half of one. For .npy the sidecar is written first, so a complete array always has its ids.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from anatcl_core.atomic import check_writable_folder, write_atomic

FEATURE_FORMATS = (".tsv", ".csv", ".parquet", ".npy")
ID_COLUMN = "participant_id"


def feature_columns(n: int) -> list[str]:
    """['feature_000', ..., 'feature_511'] for n = 512 (zero-padded to at least 3 digits)."""
    digits = max(3, len(str(n - 1)))
    return [f"feature_{i:0{digits}d}" for i in range(n)]


def file_format(path: str | os.PathLike) -> str:
    """The format a path names, by its suffix in lower case: 'features.CSV' -> '.csv'."""
    return Path(path).suffix.lower()


def ids_sidecar(path: str | os.PathLike) -> Path:
    """'features.npy' -> 'features.ids.tsv': the participant ids of a .npy feature file."""
    path = Path(path)
    return path.with_name(f"{path.stem}.ids.tsv")


def output_files(path: Path) -> list[Path]:
    """The files writing features to `path` creates: the file itself, and for .npy its ids sidecar."""
    return [path, ids_sidecar(path)] if file_format(path) == ".npy" else [path]


def parquet_available() -> bool:
    """Whether pyarrow, which writes .parquet files, is installed."""
    return importlib.util.find_spec("pyarrow") is not None


def check_features_out(out: Path, overwrite: bool, protected: Sequence[Path],
                       formats: Sequence[str] = FEATURE_FORMATS, sidecar: bool = True) -> Path:
    """Refuse an --out that is not usable or would destroy something, before any work; -> the resolved path.

    Refused (ValueError, one line naming --out): a suffix not in `formats`, a folder, a device or pipe, a path
    equal to (or inside, for a folder) one of `protected` (the inputs), an existing output file (for .npy also
    its ids sidecar) unless `overwrite`, a folder that cannot be written, .parquet without pyarrow installed.
    `sidecar=False`: a .npy written alone (a cohort's features, whose ids are its participants.tsv).
    """
    out = out.resolve()
    if out.is_dir():
        raise ValueError(f"--out {out}: is a folder; expected a file path ending in {', '.join(formats)}")
    if out.exists() and not out.is_file():
        raise ValueError(f"--out {out}: not a regular file (a device or pipe); expected a file path")
    if file_format(out) not in formats:
        raise ValueError(f"--out {out}: expected a file path ending in {', '.join(formats)}")
    if file_format(out) == ".parquet" and not parquet_available():
        raise ValueError(f"--out {out}: writing Parquet needs pyarrow, which is not installed; run "
                         "`pip install pyarrow`, or write .tsv, .csv or .npy")
    for path in protected:
        path = path.resolve()
        if out == path or (path.is_dir() and path in out.parents):
            raise ValueError(f"--out {out}: would overwrite an input ({path}); write the features elsewhere")
    existing = [p for p in (output_files(out) if sidecar else [out]) if p.exists()]
    if existing and not overwrite:
        what = "" if existing[0] == out else f" its ids file {existing[0]}"
        raise ValueError(f"--out {out}:{what} already exists; add --overwrite to replace it, or choose another path")
    check_writable_folder(out.parent, "--out")
    return out


def features_table(ids: Sequence[str], features: np.ndarray) -> pd.DataFrame:
    """ids [N] + features [N, D] -> DataFrame with `participant_id` then D float32 feature columns."""
    table = pd.DataFrame(np.asarray(features, dtype=np.float32), columns=feature_columns(features.shape[1]))
    table.insert(0, ID_COLUMN, list(map(str, ids)))
    return table


def write_features(path: str | os.PathLike, ids: Sequence[str], features: np.ndarray) -> list[Path]:
    """Write ids [N] and features [N, D] to `path` in the format of its suffix; -> the files written."""
    path = Path(path)
    if len(ids) != len(features):
        raise ValueError(f"{path}: {len(ids)} ids for {len(features)} feature rows; expected one id per row")
    suffix = file_format(path)
    if suffix == ".npy":
        ids_text = pd.DataFrame({ID_COLUMN: list(map(str, ids))}).to_csv(sep="\t", index=False)
        write_atomic(ids_sidecar(path), lambda f: f.write(ids_text.encode()))
        write_atomic(path, lambda f: np.save(f, np.asarray(features, dtype=np.float32)))
        return [path, ids_sidecar(path)]
    table = features_table(ids, features)
    if suffix in (".tsv", ".csv"):
        text = table.to_csv(sep="\t" if suffix == ".tsv" else ",", index=False, float_format="%.9g")
        write_atomic(path, lambda f: f.write(text.encode()))
    elif suffix == ".parquet":
        write_atomic(path, lambda f: table.to_parquet(f, engine="pyarrow", index=False))
    else:
        raise ValueError(f"{path}: expected a file path ending in {', '.join(FEATURE_FORMATS)}")
    return [path]


def check_file(path: Path, what: str, formats: str) -> None:
    """One clear error unless `path` is a regular file: a folder, a missing path (FileNotFoundError) or a device
    or pipe (e.g. /dev/null) each named; `what` ("labels file") and `formats` (".tsv or .csv") say what to give."""
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; expected the {what} ({formats})")
    if not path.exists():
        if path.is_symlink():
            raise ValueError(f"{path}: a link to {os.readlink(path)}, which does not exist; expected the {what} "
                             f"({formats})")
        raise FileNotFoundError(2, f"no such {what}", str(path))
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file; expected the {what} ({formats})")


#: Byte-order marks of UTF-16 text, as spreadsheets save "Unicode text"; other text is read as UTF-8.
_UTF16_MARKS = (b"\xff\xfe", b"\xfe\xff")


def read_text_table(path: str | os.PathLike, what: str, **options) -> pd.DataFrame:
    """A text table with at least one row: comma-separated for .csv (any case), tab otherwise, or `sep` as
    given; UTF-8, or UTF-16 with its byte-order mark. `what` names it in errors ("features file"):
    FileNotFoundError or a one-line ValueError naming the file, instead of pandas' own messages."""
    path = Path(path)
    check_file(path, what, ".tsv or .csv")
    with open(path, "rb") as f:
        encoding = "utf-16" if f.read(2) in _UTF16_MARKS else "utf-8"
    sep = options.pop("sep", "," if file_format(path) == ".csv" else "\t")
    try:
        # index_col=False: a row ending in a separator must not turn the first column into the index
        table = pd.read_csv(path, sep=sep, index_col=False, encoding=encoding, **options)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: empty file; expected the {what} with a header line and one row per "
                         "subject") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: {_undecodable(path, encoding)}; expected the {what} saved as UTF-8 (or UTF-16) "
                         "text") from None
    except pd.errors.ParserError as err:
        raise ValueError(f"{path}: not a readable {what} ({' '.join(str(err).split())[:80]})") from None
    if any("\x00" in str(column) for column in table.columns):
        raise ValueError(f"{path}: NUL characters in the header (UTF-16 or UTF-32 text without its byte-order "
                         f"mark?); expected the {what} saved as UTF-8 text")
    if table.empty:
        raise ValueError(f"{path}: a header line and no rows; expected one row per subject")
    return table


def _undecodable(path: Path, encoding: str) -> str:
    """Where `path` first fails to decode, as a person finds it: the line and the byte (pandas' error counts
    bytes from the start of the chunk it was reading, not of the file)."""
    data = path.read_bytes()
    try:
        data.decode(encoding)
    except UnicodeDecodeError as err:
        line = data[:err.start].decode(encoding, errors="replace").count("\n") + 1
        return f"line {line} is not {encoding.upper()} text (byte 0x{data[err.start]:02x})"
    return f"not {encoding.upper()} text"


def read_features(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """(ids [N], features [N, D] float32) from a file `write_features` wrote (any of FEATURE_FORMATS)."""
    path, suffix = Path(path), file_format(path)
    check_file(path, "features file", f"{', '.join(FEATURE_FORMATS)}, as anatcl embed writes it")
    if suffix == ".npy":
        sidecar = ids_sidecar(path)
        if not os.path.lexists(sidecar):        # anything else there is named by read_text_table
            raise ValueError(f"{path}: its ids file {sidecar.name} is missing; expected the participant ids beside "
                             "a .npy feature file (anatcl embed writes both)")
        ids = read_text_table(sidecar, "ids file", dtype=str)
        if ID_COLUMN not in ids.columns:
            raise ValueError(f"{sidecar}: no '{ID_COLUMN}' column; found {list(ids.columns[:5])}")
        ids = ids[ID_COLUMN].tolist()
        try:
            features = np.load(path)
        except (ValueError, OSError) as err:
            raise ValueError(f"{path}: not a NumPy array file ({' '.join(str(err).split())[:80]})") from None
        if features.ndim != 2 or len(features) != len(ids):
            raise ValueError(f"{path}: array of shape {list(features.shape)} for {len(ids)} ids in {sidecar}; "
                             "expected [subjects, features], one row per id")
        return ids, features.astype(np.float32, copy=False)
    if suffix == ".parquet":
        table = pd.read_parquet(path)
    elif suffix in (".tsv", ".csv"):
        table = read_text_table(path, "features file", dtype={ID_COLUMN: str})
    else:
        raise ValueError(f"{path}: expected a file path ending in {', '.join(FEATURE_FORMATS)}")
    if ID_COLUMN not in table.columns:
        raise ValueError(f"{path}: no '{ID_COLUMN}' column; found {list(table.columns[:5])}")
    columns = [c for c in table.columns if c != ID_COLUMN]
    text = [c for c in columns if not pd.api.types.is_numeric_dtype(table[c])]
    if not columns or text:
        found = f"column(s) {text[:3]} hold text" if text else "no feature columns"
        raise ValueError(f"{path}: {found}; expected {ID_COLUMN} then one numeric column per feature (the file "
                         "anatcl embed writes; a participants table goes to --labels)")
    return table[ID_COLUMN].astype(str).tolist(), table[columns].to_numpy(dtype=np.float32)
