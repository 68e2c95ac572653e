"""Reading many stored runs at once: checked in one pass, their metrics read in another.

A grid of 10,000 runs is 10,000 run folders. Opening each ``metrics.parquet`` with pandas and
labelling it costs milliseconds per run and holds one DataFrame per run before they are joined,
so reading a cached grid took seconds per thousand runs and memory that grew with the grid.
Here:

* :func:`complete_metas` checks runs as :meth:`RunStore.load_complete` does (``meta.json``
  parses, the status is complete, ``metrics.parquet`` opens and holds the rows ``meta.json``
  promises), before anything is trained;
* :func:`read_metrics` reads the four tidy columns of every run with pyarrow, keeps only the
  metrics (and layers) asked for, and joins the reading grid's labels (conditions, seed) once,
  in grid order. A run that two arms share appears once per arm, labelled by each.

The labels stored in a file are those of the grid that trained it, which may be another study's,
so they are not read.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from .store import COMPLETE, DamagedRun, RunStore

TIDY_COLUMNS = ["step", "layer", "metric", "value"]


def _schema():
    import pyarrow as pa

    return pa.schema([("step", pa.int64()), ("layer", pa.large_string()), ("metric", pa.large_string()),
                      ("value", pa.float64())])


def _format():
    import pyarrow.dataset as ds

    # Prebuffering pays for large remote files; for many small local ones it only costs time.
    return ds.ParquetFileFormat(default_fragment_scan_options=ds.ParquetFragmentScanOptions(pre_buffer=False))


def check_names(parameter: str, names) -> None:
    """Raise ConfigError unless ``names`` is None or a list of strings (``"loss"`` alone is not)."""
    from ..validation import ConfigError

    if names is not None and (isinstance(names, str) or not all(isinstance(n, str) for n in names)):
        raise ConfigError(f"invalid parameter {parameter}={names!r}: must be a list of names, e.g. ['test_loss']")


def complete_metas(store: RunStore, rids: Iterable[str]) -> Iterator[tuple[str, dict]]:
    """``(run id, meta)`` of every complete, undamaged run among ``rids``; damaged runs are set aside.

    Same checks as :meth:`RunStore.load_complete`; a generator, so a caller that keeps a few
    fields of each meta never holds them all.
    """
    import pyarrow.fs as pafs

    fmt, fs = _format(), pafs.LocalFileSystem()
    for rid in dict.fromkeys(rids):
        try:
            meta = store.load_meta(rid)
            if meta is None or meta.get("status") not in COMPLETE:
                continue
            try:
                rows = fmt.make_fragment(str(store.path(rid) / "metrics.parquet"), filesystem=fs).metadata.num_rows
            except (OSError, ValueError) as err:  # missing, truncated, not parquet
                raise DamagedRun(rid, f"metrics.parquet does not open ({type(err).__name__}: {err})") from None
            if "n_metric_rows" in meta and rows != meta["n_metric_rows"]:
                raise DamagedRun(rid, f"metrics.parquet has {rows} rows, meta.json promises {meta['n_metric_rows']}")
        except DamagedRun as damage:
            store.set_aside(rid, damage.problem)
            continue
        yield rid, meta


def read_metrics(store: RunStore, labels: pd.DataFrame, *, metrics: Sequence[str] | None = None,
                 layers: Sequence[str] | None = None) -> pd.DataFrame:
    """The tidy metrics of the runs in ``labels``, labelled by it, in its row order.

    Each run's file is read whole into memory and parsed there (about 0.1 ms for a small run,
    against 0.2-0.5 ms through a pyarrow dataset), filtered at once, and the filtered tables are
    combined in blocks, so memory holds the result and one block, not one table per run.

    Args:
        store: where the runs are.
        labels: one row per grid position to read: ``run_id``, the condition columns, ``seed``
            (the order of its columns is the order of the result's label columns). A run id may
            occur in several rows (a run shared by arms): its metrics are repeated under each.
        metrics: read only these metric names (default: every metric).
        layers: read only these layers (default: every layer).

    Returns:
        ``<labels columns>, step, layer, metric, value``, rows of each position in the order
        its run stored them.

    Raises:
        DamagedRun: a file that passed :func:`complete_metas` could not be read (its pages,
            not its footer, are damaged); ``problem`` names it.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    columns = [*labels.columns, *TIDY_COLUMNS]
    if labels.empty:
        return pd.DataFrame(columns=columns)
    schema = _schema()
    wanted = {c: pa.array(list(v), pa.large_string()) for c, v in (("metric", metrics), ("layer", layers))
              if v is not None}
    runs = pd.Index(pd.unique(labels["run_id"].to_numpy()))
    blocks, block, counts = [], [], np.zeros(len(runs), dtype=np.int64)
    for i, rid in enumerate(runs):
        path = store.path(rid) / "metrics.parquet"
        try:
            with open(path, "rb") as f:
                table = pq.ParquetFile(pa.BufferReader(f.read())).read(columns=TIDY_COLUMNS, use_threads=False)
            if table.schema != schema:
                table = table.select(TIDY_COLUMNS).cast(schema)  # e.g. a layer column of nulls only
        except (OSError, ValueError, pa.ArrowException) as err:
            raise DamagedRun(str(rid), f"metrics.parquet does not read ({type(err).__name__}: {err})") from None
        for column, values in wanted.items():
            table = table.filter(pc.is_in(table[column], value_set=values))
        counts[i] = table.num_rows
        block.append(table)
        if len(block) == 512:
            blocks.append(pa.concat_tables(block).combine_chunks())
            block = []
    found = pa.concat_tables(blocks + block).to_pandas()
    # Rows of run r lie at starts[r] .. starts[r] + counts[r]; one such range per labels row.
    position_run = runs.get_indexer(labels["run_id"])
    lengths = counts[position_run]
    front = labels.iloc[np.repeat(np.arange(len(labels)), lengths)].reset_index(drop=True)
    if len(labels) != len(runs):  # some run is shared by several rows: repeat its range
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        found = found.iloc[np.arange(lengths.sum()) + np.repeat(starts[position_run] - first, lengths)]
    return pd.concat([front, found.reset_index(drop=True)], axis=1)


def stored_metric_names(store: RunStore, rids: Iterable[str]) -> set[str]:
    """Every metric name the runs ``rids`` stored (for error messages)."""
    import pyarrow.dataset as ds

    paths = [str(store.path(rid) / "metrics.parquet") for rid in dict.fromkeys(rids)]
    table = ds.dataset(paths, schema=_schema(), format=_format()).to_table(columns=["metric"])  # rare: errors only
    return set(table.column("metric").unique().to_pylist()) - {None}
