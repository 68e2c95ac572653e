"""The run store: one folder per run, keyed by a hash of its config and seed.

Layout: ``<root>/<run_id>/metrics.parquet`` (tidy long table) and ``meta.json`` (config, seed,
status, package versions, git commit, timings), plus optional extra tables ``<name>.parquet`` in
their own schemas, checkpoints ``<name>.pt`` (dicts of tensors: model weights, a stored
trajectory) and tables derived later from a stored run, ``derived/<name>-<hash>.parquet`` (see
:meth:`RunStore.ensure_derived`). A run folder is first written under a temporary
name and then renamed into place, so a run killed mid-write never appears as a run folder at all;
only runs whose ``meta.json`` says ``finished`` or ``diverged`` count as complete and are reused.

**Many writers.** Two grids, sweeps, notebooks or Dask workers may share one store. A writer
*claims* a run before training it (:meth:`RunStore.claim`: an OS file lock, ``fcntl``/``flock``
through ``filelock``, on ``<root>/.claims/<run_id>.lock``, which works on local disks and on NFS
with working locks), so no run is trained twice; the lock is released by the kernel when its
holder dies, so a crashed writer's claim is taken over at once. The claim's holder (host, pid,
time) is written beside the lock for ``runs`` to show.

**Damaged runs.** Reading a run checks it (:meth:`RunStore.load_complete`): ``meta.json`` parses,
the status is complete, ``metrics.parquet`` opens and has the rows ``meta.json`` promises. A
damaged folder is moved to ``<root>/.damaged/`` with a warning naming it and its problem, and the
run counts as missing (it is recomputed). Temporary folders and markers left by killed writers
are removed once older than :data:`LEFTOVER_SECONDS`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import socket
import time
import uuid
import warnings
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd

from ..paths import runs_dir

# Bump when a code change alters what a run computes, so old cached runs are not reused.
STORE_VERSION = 3  # 3: Lanczos tridiagonal in float64 (λ_max, overlaps and spectra move at ~1e-8)
COMPLETE = ("finished", "diverged")
LEFTOVER_SECONDS = 3600  # temporary folders and markers older than this belong to dead writers
_LEFTOVERS = (".tmp-", ".old-", ".client-")


RUN_LIST_COLUMNS = ["run_id", "kind", "status", "seed", "diverged_step", "seconds", "created", "conditions", "error"]


def _short_config(config: dict | None) -> str:
    """A run's main choices in one short string: ``mlp w64 d3 | mnist1d | sgd lr=0.1 bs=128 steps=500``."""
    if not isinstance(config, dict):
        return ""
    model, data, train = (config.get(k) or {} for k in ("model", "data", "train"))
    parts = []
    if model:
        name = model.get("kind") or model.get("name", "")
        size = model.get("params", model)
        parts.append(" ".join(str(x) for x in (name, f"w{size['width']}" if "width" in size else "",
                                                f"d{size['depth']}" if "depth" in size else "") if x))
    if data:
        parts.append(str(data.get("name", "")))
    if train:
        parts.append(f"{train.get('optimizer', '')} lr={train.get('lr', '')} bs={train.get('batch_size', '')} "
                     f"steps={train.get('steps', '')}")
    return " | ".join(p for p in parts if p)


def write_table_atomic(path: Path, table: pd.DataFrame) -> None:
    """Write ``table`` as parquet at ``path`` under a temporary name, then rename it into place.

    A reader never sees half a file; temporaries in the folder older than :data:`LEFTOVER_SECONDS`
    (left by killed writers) are removed first.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for stale in path.parent.glob(".tmp-*"):
        with contextlib.suppress(FileNotFoundError):
            if now - stale.stat().st_mtime > LEFTOVER_SECONDS:
                stale.unlink()
    tmp = path.parent / f".tmp-{path.name}-{uuid.uuid4().hex[:8]}"
    try:
        table.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class DamagedRun(Exception):
    """A run folder that cannot be read as it claims: ``rid`` and the ``problem``."""

    def __init__(self, rid: str, problem: str):
        super().__init__(f"run {rid}: {problem}")
        self.rid, self.problem = rid, problem


def run_id(config) -> str:
    """16 hex digits of sha256 over a run config's identity (no ``conditions`` labels) and STORE_VERSION.

    Computed once per config by :func:`analysis_lib.runs.execute.run_grid` and passed down.
    """
    blob = json.dumps({"store_version": STORE_VERSION, "config": config.identity()},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class RunStore:
    """Read and write runs under ``root`` (default ``data/runs``, or ``$ANALYSIS_LIB_DATA/runs``)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else runs_dir()

    def path(self, rid: str) -> Path:
        """The folder of run ``rid``."""
        return self.root / rid

    def load_meta(self, rid: str) -> dict | None:
        """The run's meta.json, or None when no run folder exists.

        Raises:
            DamagedRun: the folder exists but its meta.json is missing or does not parse.
        """
        # meta.json is read relative to the folder opened first: a folder moved into place by
        # another writer between two path look-ups must not look like a folder without meta.json.
        try:
            folder_fd = os.open(self.path(rid), os.O_RDONLY | os.O_DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            fd = os.open("meta.json", os.O_RDONLY, dir_fd=folder_fd)
        except FileNotFoundError:
            raise DamagedRun(rid, "meta.json is missing") from None
        finally:
            os.close(folder_fd)
        try:
            with open(fd, encoding="utf-8") as f:
                return json.loads(f.read())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DamagedRun(rid, f"meta.json does not parse ({err})") from None

    def verified_meta(self, rid: str) -> dict | None:
        """The meta of a run whose files are what it says (None: no run).

        Raises:
            DamagedRun: meta.json does not parse, or a complete run's metrics.parquet does not
                open or lacks the rows meta.json promises.
        """
        meta = self.load_meta(rid)
        if meta is None or meta.get("status") not in COMPLETE:
            return meta
        import pyarrow.parquet as pq

        try:
            rows = pq.read_metadata(self.path(rid) / "metrics.parquet").num_rows
        except (OSError, ValueError) as err:  # missing, truncated, not parquet
            raise DamagedRun(rid, f"metrics.parquet does not open ({type(err).__name__}: {err})") from None
        if "n_metric_rows" in meta and rows != meta["n_metric_rows"]:
            raise DamagedRun(rid, f"metrics.parquet has {rows} rows, meta.json promises {meta['n_metric_rows']}")
        return meta

    def load_complete(self, rid: str) -> dict | None:
        """The meta of a complete, undamaged run, or None; a damaged run is set aside (and warned about)."""
        try:
            meta = self.verified_meta(rid)
        except DamagedRun as damage:
            self.set_aside(rid, damage.problem)
            return None
        return meta if meta is not None and meta.get("status") in COMPLETE else None

    def is_complete(self, rid: str) -> bool:
        """The run exists, is undamaged, and finished or diverged (a failed run is retried)."""
        return self.load_complete(rid) is not None

    def set_aside(self, rid: str, problem: str) -> Path | None:
        """Move a damaged run folder to ``<root>/.damaged/`` with a warning; it will be recomputed."""
        target = self.root / ".damaged" / f"{rid}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(self.path(rid), target)
        except FileNotFoundError:  # another writer set it aside first
            return None
        warnings.warn(f"damaged run {rid} ({problem}) moved to {target.relative_to(self.root)}; it will be "
                      "recomputed", RuntimeWarning, stacklevel=3)
        return target

    @contextlib.contextmanager
    def claim(self, rid: str, *, blocking: bool = True) -> Iterator[bool]:
        """Hold the claim on run ``rid`` for the block; yields False when not blocking and another holds it.

        While a writer holds the claim no other writer (process, thread or machine sharing the
        store) trains or writes the run. The lock dies with its holder.
        """
        from filelock import FileLock, Timeout

        folder = self.root / ".claims"
        folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(folder / f"{rid}.lock"), timeout=-1 if blocking else 0, thread_local=False,
                        is_singleton=False)
        try:
            lock.acquire()
        except Timeout:
            yield False
            return
        info = folder / f"{rid}.holder"
        try:
            info.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                        "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}))
            yield True
        finally:
            info.unlink(missing_ok=True)
            lock.release()

    def clean_leftovers(self, max_age: float = LEFTOVER_SECONDS) -> int:
        """Remove temporary folders and markers of dead writers older than ``max_age`` seconds."""
        if not self.root.is_dir():
            return 0
        removed, now = 0, time.time()
        for p in self.root.iterdir():
            if p.name.startswith(_LEFTOVERS):
                try:
                    if now - p.stat().st_mtime > max_age:
                        shutil.rmtree(p) if p.is_dir() else p.unlink()
                        removed += 1
                except FileNotFoundError:
                    continue
        return removed

    def check_writable(self, min_free_mb: float = 50) -> None:
        """Raise ConfigError when runs cannot be written here: read-only, or nearly full."""
        from ..validation import ConfigError

        hint = "point ANALYSIS_LIB_DATA (or --store) at a writable folder with free space"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".tmp-write-check-{uuid.uuid4().hex[:8]}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as err:
            raise ConfigError(f"invalid run store {self.root}: cannot write there ({err.strerror}); {hint}") from None
        free = shutil.disk_usage(self.root).free / 2**20
        if free < min_free_mb:
            raise ConfigError(f"invalid run store {self.root}: only {free:.0f} MB free; {hint}")

    def load_metrics(self, rid: str) -> pd.DataFrame:
        """The run's tidy metrics table."""
        return pd.read_parquet(self.path(rid) / "metrics.parquet")

    def load_table(self, rid: str, name: str) -> pd.DataFrame | None:
        """An extra table of the run (see :meth:`save`), or None when the run has none by that name."""
        path = self.path(rid) / f"{name}.parquet"
        return pd.read_parquet(path) if path.exists() else None

    def load_checkpoint(self, rid: str, name: str) -> dict | None:
        """A checkpoint of the run (a dict of tensors on CPU), or None when it has none by that name."""
        import torch

        path = self.path(rid) / f"{name}.pt"
        return torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None

    def save(self, rid: str, metrics: pd.DataFrame, meta: dict,
             tables: dict[str, pd.DataFrame | dict] | None = None) -> Path:
        """Write the run atomically: build it in a temporary folder, then rename it into place.

        ``tables`` are extra outputs beside ``metrics.parquet``: a DataFrame (a tidy table in its
        own schema, e.g. ``spectrum``) is written as ``<name>.parquet``; a dict of tensors (a
        checkpoint, e.g. ``final`` weights) as ``<name>.pt``. A previous folder for the same run
        (a failed attempt) is replaced.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{rid}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            for name, table in (tables or {}).items():
                if name == "metrics" or not name.isidentifier():
                    raise ValueError(f"invalid table name {name!r}: an identifier other than 'metrics'")
                if isinstance(table, pd.DataFrame):
                    table.to_parquet(tmp / f"{name}.parquet", index=False)
                elif isinstance(table, dict):
                    import torch

                    torch.save(table, tmp / f"{name}.pt")
                else:
                    raise TypeError(f"table {name!r} must be a DataFrame or a dict of tensors, "
                                    f"not {type(table).__name__}")
            metrics.to_parquet(tmp / "metrics.parquet", index=False)
            meta = {**meta, "n_metric_rows": len(metrics)}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
            self._move_into_place(tmp, self.path(rid))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return self.path(rid)

    def _move_into_place(self, tmp: Path, final: Path) -> None:
        """Rename ``tmp`` to ``final``, first moving aside whatever is there; never fails on a race."""
        for _ in range(10):
            if final.exists():
                trash = self.root / f".old-{final.name}-{uuid.uuid4().hex[:8]}"
                with contextlib.suppress(FileNotFoundError):
                    os.replace(final, trash)
                shutil.rmtree(trash, ignore_errors=True)
            try:
                os.replace(tmp, final)
                return
            except OSError as err:  # another writer renamed its folder in between
                if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
        raise RuntimeError(f"could not move run {final.name} into place: other writers keep replacing it")

    def derived_path(self, rid: str, name: str, params: dict) -> Path:
        """Where :meth:`ensure_derived` keeps the table ``name`` computed from run ``rid`` with ``params``."""
        if not name.isidentifier():
            raise ValueError(f"invalid derived table name {name!r}: must be an identifier")
        blob = json.dumps(params, sort_keys=True, default=str)
        return self.path(rid) / "derived" / f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}.parquet"

    def ensure_derived(self, rid: str, name: str, params: dict, compute: Callable[[], pd.DataFrame]) -> pd.DataFrame:
        """A table derived from a stored run (e.g. statistics of its checkpoints), computed once, here.

        The building block; :func:`analysis_lib.runs.derived.derive` is the general form (pairs and
        groups of runs, an executor, versions, the reading grid's labels).

        Kept as ``<run>/derived/<name>-<hash of params>.parquet``: the same ``params`` (put a version
        of the analysis code in them) read the stored table; other params compute another one.
        The file is written to a temporary name and renamed, so a reader never sees half a table;
        two processes computing the same table concurrently both write a complete file.

        Args:
            rid: a stored run. name: an identifier. params: JSON-serialisable, keyed by name.
            compute: called without arguments when the table is not stored yet.

        Returns:
            The stored or newly computed table.
        """
        path = self.derived_path(rid, name, params)
        if path.exists():
            return pd.read_parquet(path)
        if not self.path(rid).is_dir():
            raise FileNotFoundError(f"no stored run {rid!r} under {self.root} to derive {name!r} from")
        table = compute()
        write_table_atomic(path, table)
        return table

    def run_ids(self) -> list[str]:
        """Ids of every run folder (complete or not); temporary folders are skipped."""
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def runs(self) -> pd.DataFrame:
        """One row per stored run: run_id, kind, status, seed, diverged_step, seconds, created, conditions, error.

        ``conditions`` are what the run's config sets (its model, data and training choices, in
        short); ``error`` is the last line of a failed run's traceback or a damaged run's problem.
        """
        rows = []
        for rid in self.run_ids():
            try:
                meta = self.load_meta(rid) or {"status": "incomplete"}
            except DamagedRun as damage:
                meta = {"status": "damaged", "error": damage.problem}
            error = (meta.get("error") or "").strip().splitlines()
            rows.append({"run_id": rid, "kind": (meta.get("config") or {}).get("kind", ""),
                         "status": meta.get("status"), "seed": meta.get("seed"),
                         "diverged_step": meta.get("diverged_step"),
                         "seconds": (meta.get("timings") or {}).get("total_seconds"),
                         "created": meta.get("created"), "conditions": _short_config(meta.get("config")),
                         "error": error[-1][:160] if error else ""})
        return pd.DataFrame(rows, columns=RUN_LIST_COLUMNS)

    def clear(self) -> int:
        """Delete every stored run (and leftover temporary folders); return how many runs went."""
        n = len(self.run_ids())
        if self.root.exists():
            shutil.rmtree(self.root)
        return n
