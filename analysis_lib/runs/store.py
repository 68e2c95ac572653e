"""The run store: one folder per run, keyed by a hash of its config and seed.

Layout: ``<root>/<run_id>/metrics.parquet`` (tidy long table) and ``meta.json`` (config, seed,
status, package versions, git commit, timings), plus optional extra tables ``<name>.parquet`` in
their own schemas, checkpoints ``<name>.pt`` (dicts of tensors: model weights, a stored
trajectory) and tables derived later from a stored run, ``derived/<name>-<hash>.parquet`` (see
:meth:`RunStore.ensure_derived`). A run folder is first written under a temporary
name and then renamed into place, so a run killed mid-write never appears as a run folder at all;
only runs whose ``meta.json`` says ``finished`` or ``diverged`` count as complete and are reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable

import pandas as pd

from ..paths import runs_dir

# Bump when a code change alters what a run computes, so old cached runs are not reused.
STORE_VERSION = 3  # 3: Lanczos tridiagonal in float64 (λ_max, overlaps and spectra move at ~1e-8)
COMPLETE = ("finished", "diverged")


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
        """The run's meta.json, or None when no run folder exists."""
        try:
            return json.loads((self.path(rid) / "meta.json").read_text())
        except FileNotFoundError:
            return None

    def is_complete(self, rid: str) -> bool:
        """The run exists and finished or diverged (a failed run is retried)."""
        meta = self.load_meta(rid)
        return meta is not None and meta.get("status") in COMPLETE

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
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
            final = self.path(rid)
            if final.exists():
                trash = self.root / f".old-{rid}-{uuid.uuid4().hex[:8]}"
                os.replace(final, trash)
                shutil.rmtree(trash, ignore_errors=True)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def derived_path(self, rid: str, name: str, params: dict) -> Path:
        """Where :meth:`ensure_derived` keeps the table ``name`` computed from run ``rid`` with ``params``."""
        if not name.isidentifier():
            raise ValueError(f"invalid derived table name {name!r}: must be an identifier")
        blob = json.dumps(params, sort_keys=True, default=str)
        return self.path(rid) / "derived" / f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}.parquet"

    def ensure_derived(self, rid: str, name: str, params: dict, compute: Callable[[], pd.DataFrame]) -> pd.DataFrame:
        """A table derived from a stored run (e.g. statistics of its checkpoints), computed once.

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
        path.parent.mkdir(exist_ok=True)
        tmp = path.parent / f".tmp-{path.name}-{uuid.uuid4().hex[:8]}"
        try:
            table.to_parquet(tmp, index=False)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return table

    def run_ids(self) -> list[str]:
        """Ids of every run folder (complete or not); temporary folders are skipped."""
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def runs(self) -> pd.DataFrame:
        """One row per stored run: run_id, status, seed, diverged_step, seconds, created."""
        rows = []
        for rid in self.run_ids():
            meta = self.load_meta(rid) or {"status": "incomplete"}
            rows.append({"run_id": rid, "status": meta.get("status"), "seed": meta.get("seed"),
                         "diverged_step": meta.get("diverged_step"),
                         "seconds": meta.get("timings", {}).get("total_seconds"),
                         "created": meta.get("created")})
        return pd.DataFrame(rows, columns=["run_id", "status", "seed", "diverged_step", "seconds", "created"])

    def clear(self) -> int:
        """Delete every stored run (and leftover temporary folders); return how many runs went."""
        n = len(self.run_ids())
        if self.root.exists():
            shutil.rmtree(self.root)
        return n
