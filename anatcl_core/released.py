"""The authors' released AnatCL weights: where they are published, a checksummed local cache, the `released:` spec.

The ten released files (ResNet-18, descriptor 'global' or 'local', folds 0-4; 33.5 M parameters, so at least
134 MB each) are kept in one cache folder, `$ANATCL_HOME` (default `~/.cache/anatcl`), as
`anatcl-resnet18-<descriptor>-fold<k>.pth`.
Beside them, `sha256.json` records each file's SHA-256 the first time it is seen, downloaded or placed there by
hand, and every later use checks the file against it: a file changed since (a disk error, an edit, a different
file copied over it) is refused instead of silently giving other features.

Wherever a checkpoint path is accepted (`load_checkpoint`, `anatcl embed --checkpoint`), the spec
`released:<descriptor>:<fold>`, e.g. `released:global:0`, names one of these files; it is resolved to the cached
path, downloading once if needed. A file actually named like a spec can still be given as `./released:...`.

Without network the cache still works: download the URL on another machine and put the file at the path the
error message names (`anatcl` never needs the network for a file that is already in the cache).
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import socket
import time
from pathlib import Path
from typing import BinaryIO, Iterator
from urllib.error import HTTPError, URLError
from urllib.request import urlopen

from tqdm.auto import tqdm

from anatcl_core.atomic import write_atomic
from anatcl_core.methods import RELEASED_DESCRIPTORS

#: Released AnatCL weights (ResNet-18, 5 folds per descriptor), as listed by the authors' `anatcl` 0.0.3 package.
RELEASED_WEIGHTS_BASE = "https://gitlab.di.unito.it/barbano/anatcl-pretrained/-/raw/main/"
_RELEASED_RUN = ("0_obhn64_resnet18_amp_yaware_adam_tf_none_lr0.0001_step_step10_rate0.9_wd5e-05_bsz32_"
                 "trainall_False_temp0.1_views2_kernel_rbf_sigma2.0_alpha1.0_anat_desikan_normTrue_subsetTrue_"
                 "{descriptor}_lambd1.0_fold{fold}_splits5_trial0/weights.pth")
RELEASED_FOLDS = range(5)

#: Environment variable naming the cache folder, and the folder used when it is unset.
HOME_VARIABLE = "ANATCL_HOME"
DEFAULT_HOME = "~/.cache/anatcl"
#: The checksum registry inside the cache folder: {file name: {"sha256", "url", "recorded"}}.
REGISTRY_NAME = "sha256.json"
SPEC_PREFIX = "released:"

_CHUNK = 1 << 20
# What a failed download raises: no route or DNS (URLError), HTTP errors (HTTPError is a URLError), a dropped or
# cut connection, a timeout. Errors writing the cache folder are OSErrors too but are not caught here.
_NETWORK_ERRORS = (URLError, http.client.HTTPException, ConnectionError, TimeoutError, socket.timeout)


class ReleasedWeightsError(ValueError):
    """A released-weights spec that names no file, a failed download, or a cached file whose checksum changed."""


def released_weights_url(descriptor: str = "global", fold: int = 0) -> str:
    """URL of the authors' AnatCL ResNet-18 weights for `descriptor` in RELEASED_DESCRIPTORS and `fold` in 0..4."""
    if descriptor not in RELEASED_DESCRIPTORS:
        raise ValueError(f"descriptor must be one of {RELEASED_DESCRIPTORS}, got {descriptor!r}")
    if fold not in RELEASED_FOLDS:
        raise ValueError(f"fold must be one of 0..4, got {fold!r}")
    return RELEASED_WEIGHTS_BASE + _RELEASED_RUN.format(descriptor=descriptor, fold=fold)


def released_file_name(descriptor: str, fold: int) -> str:
    """File name of one released file in the cache, e.g. 'anatcl-resnet18-global-fold0.pth'."""
    return f"anatcl-resnet18-{descriptor}-fold{fold}.pth"


def cache_home(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: `cache_dir` if given, else $ANATCL_HOME, else ~/.cache/anatcl (`~` expanded)."""
    return Path(cache_dir or os.environ.get(HOME_VARIABLE) or DEFAULT_HOME).expanduser()


def is_released_spec(spec: object) -> bool:
    """Whether `spec` (a path or a string) is a `released:...` spec rather than a file path."""
    return isinstance(spec, str) and spec.startswith(SPEC_PREFIX)


def parse_released_spec(spec: str) -> tuple[str, int]:
    """'released:global:0' -> ('global', 0); anything else that starts with 'released:' is a one-line error."""
    form = f"expected released:<descriptor>:<fold> with descriptor one of {', '.join(RELEASED_DESCRIPTORS)} " \
           "and fold 0 to 4, e.g. released:global:0"
    parts = spec[len(SPEC_PREFIX):].split(":") if is_released_spec(spec) else []
    if len(parts) != 2:
        raise ReleasedWeightsError(f"checkpoint {spec!r}: {form}")
    descriptor, fold = parts
    if descriptor not in RELEASED_DESCRIPTORS:
        raise ReleasedWeightsError(f"checkpoint {spec!r}: descriptor {descriptor!r} was not released; {form}")
    if not re.fullmatch(r"[0-9]+", fold) or int(fold) not in RELEASED_FOLDS:
        raise ReleasedWeightsError(f"checkpoint {spec!r}: fold {fold!r} was not released; {form}")
    return descriptor, int(fold)


def sha256_hex(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, 64 hex digits (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def released_path(descriptor: str = "global", fold: int = 0, cache_dir: str | os.PathLike | None = None,
                  progress: bool = True) -> Path:
    """Path of the released file in the cache, downloaded if absent, its SHA-256 recorded or verified.

    Raises:
        ValueError: `descriptor` or `fold` was not released.
        ReleasedWeightsError: the download failed (the message names the URL and the path to put the file at),
            or the file's SHA-256 differs from the one recorded when it first arrived (a cached file that
            changed, or a new download of a file deleted from the cache that is not what was downloaded first).
    """
    url = released_weights_url(descriptor, fold)
    target = cache_home(cache_dir) / released_file_name(descriptor, fold)
    if not target.is_file():
        # A file deleted from the cache keeps its record: downloading it again must give the same bytes.
        recorded = read_registry(target.parent / REGISTRY_NAME).get(target.name, {}).get("sha256")
        download(url, target, progress=progress, expected_sha256=recorded)
    verify_or_record(target, url)
    return target


def download(url: str, target: Path, progress: bool = True, expected_sha256: str | None = None) -> Path:
    """Stream `url` into `target` through a hidden temporary file in the same folder, renamed when complete.

    A killed or failed download leaves nothing at `target` (at most a hidden `.<name>.*.tmp` file). A response
    shorter than its Content-Length, one that is not a torch file (an HTML login or error page served with
    status 200), or one whose SHA-256 is not `expected_sha256` (when given) is refused and not kept.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    offline = (f"could not download {url} ({{reason}}); if this machine has no network, download that URL "
               f"elsewhere and put the file at {target}")
    try:
        with urlopen(url, timeout=60) as response:
            size = int(getattr(response, "headers", {}).get("Content-Length") or 0)
            write_atomic(target, lambda f: _check_sha256(_copy(response, f, size, url, target.name, progress),
                                                         expected_sha256, url, target))
    except _NETWORK_ERRORS as err:
        # HTTPError's str has the status code; a plain URLError's useful part is its reason (e.g. DNS failure)
        cause = err if isinstance(err, HTTPError) else (getattr(err, "reason", None) or err)
        reason = " ".join(str(cause).split()) or type(err).__name__
        raise ReleasedWeightsError(offline.format(reason=reason)) from None
    return target


def _check_sha256(found: str, expected: str | None, url: str, target: Path) -> None:
    if expected is not None and found != expected:
        raise ReleasedWeightsError(
            f"{url}: the download's SHA-256 is {found}, not the {expected} recorded in "
            f"{target.parent / REGISTRY_NAME} when {target.name} first arrived; nothing was kept. If the authors "
            f"published new weights, remove the '{target.name}' entry from that file and run again")


def _copy(response: BinaryIO, out: BinaryIO, size: int, url: str, label: str, progress: bool) -> str:
    """Copy the response into `out` with a progress bar; -> the SHA-256 of the bytes copied."""
    received, digest = 0, hashlib.sha256()
    with tqdm(total=size or None, unit="B", unit_scale=True, desc=label,
              disable=not progress, leave=False) as bar:
        for chunk in iter(lambda: response.read(_CHUNK), b""):
            if received == 0 and not _looks_like_torch_file(chunk):
                raise ReleasedWeightsError(f"{url}: the server returned something that is not a torch file "
                                           f"(starts with {chunk[:16]!r}); expected the weights written by "
                                           "torch.save")
            out.write(chunk)
            digest.update(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    if size and received != size:
        raise ReleasedWeightsError(f"{url}: the download stopped after {received} of {size} bytes; run again")
    return digest.hexdigest()


def _looks_like_torch_file(head: bytes) -> bool:
    # torch.save writes a zip archive (since torch 1.6) or, before that, a pickle: protocol 2+ starts with 0x80.
    return head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")


def verify_or_record(path: Path, url: str = "") -> str:
    """The file's SHA-256, after checking it against the registry, or recording it there when it is new.

    Raises ReleasedWeightsError when a different hash was recorded for this file name before.
    """
    found = sha256_hex(path)
    registry = path.parent / REGISTRY_NAME
    recorded = read_registry(registry).get(path.name, {}).get("sha256")
    if recorded is None:
        with _locked(registry):                  # read-modify-write: runs fetching other folds may record too
            entries = read_registry(registry)
            recorded = entries.get(path.name, {}).get("sha256")
            if recorded is None:
                entries[path.name] = {"sha256": found, "url": url,
                                      "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
                text = json.dumps(entries, indent=1, sort_keys=True) + "\n"
                write_atomic(registry, lambda f: f.write(text.encode()))
                return found
    if recorded != found:
        raise ReleasedWeightsError(
            f"{path}: SHA-256 is {found} but {recorded} was recorded in {registry} when the file first arrived; "
            "the file has changed or is corrupt: delete it to download it again (if you replaced it on purpose, "
            "remove its entry from the registry instead)")
    return found


def read_registry(registry: Path) -> dict[str, dict[str, str]]:
    """{file name: {"sha256", "url", "recorded"}} from the registry JSON; {} when it does not exist yet."""
    try:
        entries = json.loads(registry.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise ReleasedWeightsError(f"{registry}: not a readable checksum registry ({err}); expected the JSON "
                                   "this library writes: delete it and the hashes are recorded again") from None
    if not isinstance(entries, dict) or not all(isinstance(v, dict) for v in entries.values()):
        raise ReleasedWeightsError(f"{registry}: expected a JSON object of {{file name: {{'sha256': ...}}}}; "
                                   "delete it and the hashes are recorded again")
    return entries


@contextlib.contextmanager
def _locked(registry: Path) -> Iterator[None]:
    """An exclusive lock on `<registry>.lock` (POSIX flock; no lock where fcntl does not exist, e.g. Windows)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(registry.with_name(registry.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
