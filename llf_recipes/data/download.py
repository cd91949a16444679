"""Fetch a catalogued dataset's raw data files from the Hugging Face Hub or ModelScope into that hub's own cache.

The hub libraries do the transfer, so their caches (HF_HOME / HF_HUB_CACHE, MODELSCOPE_CACHE), mirrors (HF_ENDPOINT,
MODELSCOPE_ENDPOINT), tokens, offline switch and resume behave exactly as their users expect. This module picks the
hub and repository from dataset_info.d, asks only for data files, and turns each library's failures into one LlfError
that says how to carry on without a network. Both libraries are imported inside the functions that need them, so
the quick verbs never pay for them (and neither pulls in torch).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llf_recipes.catalog import Catalog
from llf_recipes.errors import LlfError
from llf_recipes.suggest import nearest

DATA_SUFFIXES = (".json", ".jsonl", ".parquet", ".csv", ".tsv")
DATA_PATTERNS = [f"*{suffix}" for suffix in DATA_SUFFIXES]
# The legacy `datasets` metadata file is JSON but describes the data rather than holding it.
IGNORE_PATTERNS = ["*dataset_infos.json"]
HUBS = {"hf": "huggingface", "modelscope": "modelscope"}
# What to do when a hub cannot be reached: the bundled rows or a copy at hand first, then the hub's own variables.
OFFLINE_FIX = {
    "huggingface": "offline: `llf-recipes prepare {name} --sample-data` (the bundled rows) or `llf-recipes convert {name} "
                   "--input FILE` (a copy you have); HF_HUB_OFFLINE=1 reads the Hugging Face cache once it holds the "
                   "files; or point HF_ENDPOINT at a reachable mirror (or `llf-recipes register --file FILE ...`)",
    "modelscope": "offline: `llf-recipes prepare {name} --sample-data` (the bundled rows) or `llf-recipes convert {name} "
                  "--input FILE` (a copy you have); ModelScope's cache is read by itself when the hub cannot be "
                  "reached; or point MODELSCOPE_ENDPOINT at a reachable mirror (or `llf-recipes register --file FILE ...`)",
}
# Seconds to wait for a hub's TCP handshake before trusting the cache alone (its client would retry for much longer).
REACH_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Download:
    hub: str  # "huggingface" or "modelscope"
    repo: str
    snapshot: Path  # the hub cache's directory for this revision
    files: list[Path]  # data files inside it
    note: str | None = None  # a caveat worth telling the user (e.g. served from the cache unverified)

    @property
    def revision(self) -> str | None:
        """The commit (Hugging Face) or branch (ModelScope) it is cached under; None in a pre-1.38 ModelScope cache."""
        return self.snapshot.name if self.snapshot.parent.name == "snapshots" else None


def find_source(catalog: Catalog, name: str) -> dict[str, Any]:
    """The `source` of a dataset entry, or of a fragment named by its file stem (`ultrafeedback`)."""
    if name in catalog.datasets:
        return catalog.dataset(name).source
    fragments = {ds.fragment.stem: ds for ds in catalog.datasets.values()}
    if name in fragments:
        return fragments[name].source
    if name in catalog.recipe_paths:
        raise LlfError(f"{name!r} is a recipe, not a dataset", fix=f"llf-recipes prepare --recipe {name} prepares every "
                       "dataset it names (add --sample-data for the bundled rows)")
    guess = nearest(name, [*catalog.datasets, *fragments])
    raise LlfError(f"no dataset entry or fragment named {name!r}",
                   fix=(f"did you mean {guess!r}? " if guess else "") + "`llf-recipes list --datasets` shows them")


def pick_hub(name: str, source: dict[str, Any], hub: str | None = None) -> tuple[str, str]:
    """(hub, repo id): `hub` when given, else ModelScope under USE_MODELSCOPE_HUB (as LLaMA-Factory), else HF first."""
    offered = [h for h in ("huggingface", "modelscope") if source.get(h)]
    if not offered:
        raise LlfError(f"dataset {name!r} names no Hugging Face or ModelScope repository (source: {source or 'none'})",
                       fix="download it yourself and register the file: "
                           "`llf-recipes register --file FILE --name NAME --stage STAGE`")
    if hub is not None:
        wanted = HUBS.get(hub, hub)
        if wanted not in offered:
            raise LlfError(f"dataset {name!r} is not on {wanted}; it is on {' and '.join(offered)}", key="--hub",
                           fix="leave out --hub, or pick " + " or ".join(k for k, v in HUBS.items() if v in offered))
        return wanted, source[wanted]
    prefer_ms = os.environ.get("USE_MODELSCOPE_HUB", "0").lower() in ("true", "y", "1")
    chosen = "modelscope" if prefer_ms and "modelscope" in offered else offered[0]
    return chosen, source[chosen]


def data_files(snapshot: Path) -> list[Path]:
    if not snapshot.is_dir():
        return []
    return sorted(p for p in snapshot.rglob("*")
                  if p.is_file() and p.name.endswith(DATA_SUFFIXES) and not p.name.endswith("dataset_infos.json"))


def offline_requested() -> bool:
    """HF_HUB_OFFLINE, parsed as huggingface_hub parses it; it switches off both hubs' networks here."""
    return (os.environ.get("HF_HUB_OFFLINE") or "").upper() in ("1", "ON", "YES", "TRUE")


def download(name: str, *, hub: str | None = None, cache_dir: str | Path | None = None,
             revision: str | None = None, catalog: Catalog | None = None) -> Download:
    """Download `name`'s data files (an entry or fragment of dataset_info.d) and say where they are."""
    catalog = catalog or Catalog.discover()
    cache_dir = Path(cache_dir).expanduser() if cache_dir else None
    chosen, repo = pick_hub(name, find_source(catalog, name), hub)
    fetch = hf_snapshot if chosen == "huggingface" else ms_snapshot
    try:
        snapshot, note = fetch(repo, revision=revision, cache_dir=cache_dir)
    except LlfError as exc:
        if exc.fix:
            exc.fix = exc.fix.replace("{name}", name)
        raise
    result = Download(chosen, repo, snapshot, data_files(snapshot), note)
    if not result.files:
        raise LlfError(f"{chosen} dataset {repo} has no data files ({', '.join(DATA_SUFFIXES)})",
                       where=str(snapshot) if snapshot.is_dir() else None,
                       fix="convert its data to one of those formats and `llf-recipes register --file` the result")
    return result


# ---------------------------------------------------------------- Hugging Face
def hf_snapshot(repo: str, *, revision: str | None, cache_dir: str | Path | None) -> tuple[Path, str | None]:
    try:
        import httpx
        from huggingface_hub import constants, errors, snapshot_download
    except ImportError:
        raise LlfError("downloading from the Hugging Face Hub needs huggingface_hub",
                       fix="pip install huggingface_hub (the train extra brings it)") from None
    cache = Path(cache_dir or constants.HF_HUB_CACHE).expanduser()
    fix = OFFLINE_FIX["huggingface"]
    incomplete = getattr(errors, "IncompleteSnapshotError", ())  # newer huggingface_hub only
    try:
        path = snapshot_download(repo, repo_type="dataset", revision=revision, cache_dir=cache_dir,
                                 allow_patterns=DATA_PATTERNS, ignore_patterns=IGNORE_PATTERNS)
    except incomplete as exc:
        raise LlfError(f"the cached copy of {repo} is incomplete and the Hugging Face Hub cannot be asked to finish it",
                       where=str(getattr(exc, "snapshot_path", "") or cache),
                       fix="run the download again with network access (without HF_HUB_OFFLINE)") from None
    except errors.LocalEntryNotFoundError as exc:
        if constants.HF_HUB_OFFLINE:
            raise LlfError(f"{repo} is not in the Hugging Face cache and HF_HUB_OFFLINE forbids downloading it",
                           where=str(cache), fix="run once with network access (without HF_HUB_OFFLINE), or "
                           "set --cache-dir / HF_HOME to where it was downloaded") from None
        raise _unreachable("the Hugging Face Hub", constants.ENDPOINT, repo, cache, fix, exc.__cause__) from None
    except errors.GatedRepoError:
        raise LlfError(f"{repo} is gated: accept its terms on the Hub, then download with a token",
                       fix="set HF_TOKEN (or `hf auth login`) for an account that has access") from None
    except errors.RepositoryNotFoundError:
        raise LlfError(f"no dataset repository {repo} on {constants.ENDPOINT} (or it is private)",
                       fix="check the source in dataset_info.d/; for a private repo set HF_TOKEN") from None
    except errors.RevisionNotFoundError:
        raise LlfError(f"{repo} has no revision {revision!r}", key="--revision",
                       fix="give a branch, tag or commit of the repository, or leave out --revision") from None
    except (httpx.TransportError, errors.HfHubHTTPError) as exc:
        raise _unreachable("the Hugging Face Hub", constants.ENDPOINT, repo, cache, fix, exc) from None
    return Path(path), None


# ---------------------------------------------------------------- ModelScope
def ms_snapshot(repo: str, *, revision: str | None, cache_dir: str | Path | None) -> tuple[Path, str | None]:
    try:
        import requests
        from modelscope_hub import errors, get_default_config
        from modelscope_hub.compat.snapshot_download import dataset_snapshot_download
    except ImportError:
        # `modelscope` itself imports torch on import; modelscope-hub (its download layer since 1.38) does not.
        raise LlfError("downloading from ModelScope needs modelscope-hub",
                       fix="pip install 'modelscope>=1.38' (the train extra brings it)") from None
    cache = Path(cache_dir or get_default_config().cache_dir).expanduser()
    endpoint = get_default_config().endpoint

    def fetch(local_files_only: bool) -> Path:
        return Path(dataset_snapshot_download(repo, revision=revision, cache_dir=str(cache_dir) if cache_dir else None,
                                              allow_patterns=DATA_PATTERNS, ignore_patterns=IGNORE_PATTERNS,
                                              local_files_only=local_files_only))

    try:
        if offline_requested():
            return fetch(local_files_only=True), None
        unreachable = reach_error(endpoint)
        if unreachable is not None:
            raise unreachable
        return fetch(local_files_only=False), None
    except errors.CacheNotFound:
        raise LlfError(f"{repo} is not in the ModelScope cache and HF_HUB_OFFLINE forbids downloading it",
                       where=str(cache), fix="run once with network access (without HF_HUB_OFFLINE), or "
                       "set --cache-dir / MODELSCOPE_CACHE to where it was downloaded") from None
    except requests.HTTPError as exc:  # how the compat layer reports a missing repository or a refused token
        raise LlfError(f"no dataset {repo}" + (f" at revision {revision!r}" if revision else "")
                       + f" on ModelScope at {endpoint} (or it is private): {_first_line(exc)}",
                       fix="check the source in dataset_info.d/ and --revision; for a private dataset set "
                       "MODELSCOPE_API_TOKEN") from None
    except errors.FileDownloadError as exc:
        failed = ", ".join(sorted(exc.failed_files)) or "some files"
        raise LlfError(f"{failed} of ModelScope dataset {repo} failed to download: {_first_line(exc)}",
                       where=str(exc.output_dir or cache),
                       fix="run the same command again: finished files are kept and partial ones resume") from None
    except (errors.NetworkError, errors.ServerError, requests.ConnectionError, OSError) as exc:
        network_error = exc
    # Unlike huggingface_hub, modelscope-hub does not fall back to its cache by itself when the hub is unreachable.
    try:
        snapshot = fetch(local_files_only=True)
    except errors.CacheNotFound:
        fix = OFFLINE_FIX["modelscope"]
        raise _unreachable("ModelScope", endpoint, repo, cache, fix, network_error) from None
    return snapshot, (f"ModelScope is unreachable ({type(network_error).__name__}); using the cached copy, "
                      "which could not be checked against the hub")


def reach_error(endpoint: str, timeout: float = REACH_TIMEOUT_S) -> OSError | None:
    """Why `endpoint` cannot be reached (a refused or timed-out TCP handshake), None when it answers."""
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(endpoint if "//" in endpoint else f"https://{endpoint}")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return None
    except OSError as exc:
        return exc


def _unreachable(hub: str, endpoint: str, repo: str, cache: Path, fix: str,
                 exc: BaseException | None = None) -> LlfError:
    cause = f" ({type(exc).__name__}: {_first_line(exc)})" if exc else ""
    return LlfError(f"cannot reach {hub} at {endpoint} to download {repo}{cause}, and the cache under {cache} "
                    "does not hold it", fix=fix)


def _first_line(exc: BaseException) -> str:
    return next(iter(str(exc).splitlines()), "")
