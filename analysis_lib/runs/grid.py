"""Run grids: conditions × seeds expanded into labelled run configs, and what running them returns.

:func:`expand_grid` turns a base config and condition values into run configs labelled with
their conditions; :func:`analysis_lib.runs.execute.run_grid` runs them and returns a
:class:`GridResult`: the tidy metrics of every run, one row per run, and access to each run's
config, extra tables and checkpoints in the run store. Nothing here knows a model family: any
run-config class with sections, ``seed``, ``conditions`` and ``run()`` works.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import pandas as pd

from ..training.config import config_from_dict, lookup, with_overrides
from ..validation import ConfigError, check_seeds
from .store import RunStore

# Short column names for common grid keys; others use their last dotted component.
_SHORT_NAMES = {"model.kind": "model", "data.name": "dataset", "train.optimizer": "optimizer"}
RUN_COLUMNS = ["run_id", "seed", "status", "diverged_step", "seconds", "cached", "error"]


def condition_name(key: str) -> str:
    """Column name for a dotted config key: ``"train.lr"`` -> ``"lr"``."""
    return _SHORT_NAMES.get(key, key.rsplit(".", 1)[-1])


def expand_grid(base, conditions: Mapping[str, Sequence] | Sequence[Mapping[str, Sequence]],
                seeds: Sequence[int]) -> list:
    """All combinations of condition values × seeds, as labelled run configs.

    Args:
        base: the shared config (a RunConfig, an LMRunConfig, or a RunConfig's nested dict as in YAML).
        conditions: ``{"train.optimizer": ["sgd", "adam"], ...}``; or a list of such dicts whose
            products are concatenated (like scikit-learn's ParameterGrid), for arms that vary
            different things; or a dict of named arms ``{"main": {...}, "sweep": {...}}``, which
            adds an ``arm`` column. Every run is labelled with the values of every key in any arm.
            A config that occurs in two arms is trained once and reported under both.
        seeds: replicate seeds; the same seed gives the same init and data order in every arm,
            so conditions can be compared paired by seed.

    Returns:
        Configs ordered by arm, then condition combination, then seed.
    """
    base = config_from_dict(base) if isinstance(base, Mapping) else base
    named = isinstance(conditions, Mapping) and bool(conditions) and all(
        isinstance(v, Mapping) for v in conditions.values())
    if named:
        names, arms = list(conditions), list(conditions.values())
    else:
        arms = [conditions] if isinstance(conditions, Mapping) else list(conditions)
        names = [None] * len(arms)
    check_seeds("seeds", seeds)
    _validate_arms(arms)
    keys = list(dict.fromkeys(k for arm in arms for k in arm))
    _check_names(keys)
    configs = []
    for name, arm in zip(names, arms):
        for values in itertools.product(*arm.values()):
            for seed in seeds:
                cfg = with_overrides(base, {**dict(zip(arm, values)), "seed": seed})
                labels = {"arm": name} if named else {}
                labels.update({condition_name(k): _label_value(lookup(cfg, k)) for k in keys})
                configs.append(dataclasses.replace(cfg, conditions=tuple(labels.items())))
    return configs


def _validate_arms(arms: list) -> None:
    for arm in arms:
        if not isinstance(arm, Mapping):
            raise ConfigError(f"invalid parameter conditions={arm!r}: each arm must be a mapping "
                              "of 'section.parameter' to a list of values")
        for key, values in arm.items():
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
                raise ConfigError(f"invalid parameter conditions[{key!r}]={values!r}: must be a "
                                  "non-empty list of values")


def _check_names(keys: list[str]) -> None:
    names = [condition_name(k) for k in keys]
    reserved = ("run_id", "arm", "seed", "step", "layer", "metric", "value")
    clash = {n for n in names if names.count(n) > 1 or n in reserved}
    if clash:
        raise ConfigError(f"invalid parameter conditions={keys!r}: keys map to clashing column "
                          f"names {sorted(clash)}")


def _label_value(value: Any) -> Any:
    """Table-friendly label: sequences (e.g. probe names) become ``"a+b"`` strings."""
    return "+".join(map(str, value)) if isinstance(value, (list, tuple)) else value


def select(configs: Sequence, **labels) -> list:
    """The configs whose condition labels equal ``labels``, e.g. ``select(configs, arm="gd")``."""
    return [c for c in configs if all(c.label(k) == v for k, v in labels.items())]


def label_runs(metrics: pd.DataFrame, config, rid: str) -> pd.DataFrame:
    """Prefix tidy columns with ``run_id``, the config's condition labels and ``seed``."""
    front = {"run_id": rid, **dict(config.conditions), "seed": config.seed}
    out = metrics.copy()
    for i, (name, value) in enumerate(front.items()):
        out.insert(i, name, value)
    return out


@dataclass
class GridResult:
    """What :func:`~analysis_lib.runs.execute.run_grid` returns.

    Attributes:
        metrics: tidy long table of every complete run (``run_id, <conditions>, seed, step,
            layer, metric, value``).
        runs: one row per grid position (``run_id, <conditions>, seed, status, ...``).
        configs: run id -> config, for every distinct run of the grid.
        store: the run store the runs live in.
    """

    metrics: pd.DataFrame
    runs: pd.DataFrame
    configs: dict = field(default_factory=dict)
    store: RunStore = field(default_factory=RunStore)

    def status_counts(self) -> dict[str, int]:
        """Runs finished, diverged and failed."""
        counts = self.runs["status"].value_counts()
        return {s: int(counts.get(s, 0)) for s in ("finished", "diverged", "failed")}

    def run_ids(self, **labels) -> list[str]:
        """Ids of the runs whose ``runs`` columns equal ``labels`` (grid order, each id once).

        E.g. ``result.run_ids(arm="batch", seed=0)``; no labels: every run.
        """
        keep = pd.Series(True, index=self.runs.index)
        for column, value in labels.items():
            if column not in self.runs.columns:
                raise ValueError(f"invalid argument {column}={value!r}: not a column of the run table; "
                                 f"columns are {list(self.runs.columns)}")
            keep &= self.runs[column] == value
        return list(dict.fromkeys(self.runs.loc[keep, "run_id"]))

    def parameter(self, key: str) -> pd.Series:
        """A config value of every run by run id, e.g. ``result.parameter("train.lr")``."""
        return pd.Series({rid: lookup(c, key) for rid, c in self.configs.items()}, name=key)

    def loss_unit(self) -> str | None:
        """The unit every run's loss shares (e.g. ``"nats"``) for axis labels; None if unknown or mixed."""
        units = {c.loss_unit() if hasattr(c, "loss_unit") else None for c in self.configs.values()}
        return units.pop() if len(units) == 1 else None

    def read_metrics(self, metrics: Sequence[str] | None = None, layers: Sequence[str] | None = None) -> pd.DataFrame:
        """Tidy metrics of every complete run read from the store, labelled like ``metrics``.

        Reads one pyarrow scan over the runs' files, only the ``metrics`` and ``layers`` named
        (default: all), so a study of many runs holds only what it asks for.

        Raises:
            ConfigError: ``metrics`` or ``layers`` is not a list of names, or names a metric
                that no run of the grid recorded (the error lists those that exist).
        """
        from .reader import check_names, read_metrics, stored_metric_names

        check_names("metrics", metrics)
        check_names("layers", layers)
        id_cols = list(self.runs.columns[: list(self.runs.columns).index("seed") + 1])
        labels = self.runs.loc[self.runs["status"] != "failed", id_cols]
        out = read_metrics(self.store, labels, metrics=metrics, layers=layers)
        if metrics is not None and not labels.empty and (missing := set(metrics) - set(out["metric"])):
            known = stored_metric_names(self.store, labels["run_id"])
            if missing - known:
                raise ConfigError(f"invalid parameter metrics={list(metrics)!r}: no run of the grid recorded "
                                  f"{sorted(missing - known)}; recorded metrics are {sorted(known)}")
        return out

    def table(self, name: str) -> pd.DataFrame:
        """An extra per-run table (e.g. ``"spectrum"``) of every run that has one.

        Labelled like ``metrics`` (``run_id, <conditions>, seed`` first).
        """
        frames = []
        id_cols = list(self.runs.columns[: list(self.runs.columns).index("seed") + 1])
        for row in self.runs[self.runs["status"] != "failed"][id_cols].itertuples(index=False):
            table = self.store.load_table(row.run_id, name)
            if table is not None:
                frames.append(table.assign(**dict(zip(id_cols, row)))[[*id_cols, *table.columns]])
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=id_cols)

    def checkpoints(self, name: str) -> dict[str, dict]:
        """The checkpoint ``name`` (e.g. ``"final"``) of every run that stored one, by run id."""
        out = {}
        for rid in self.runs.loc[self.runs["status"] != "failed", "run_id"].unique():
            checkpoint = self.store.load_checkpoint(rid, name)
            if checkpoint is not None:
                out[rid] = checkpoint
        return out

    def model(self, rid: str, checkpoint: str = "final"):
        """The model of run ``rid`` holding its stored ``checkpoint`` (in eval mode).

        Raises:
            ValueError: the run stored no such checkpoint (e.g. without the ``weights`` probe).
        """
        state = self.store.load_checkpoint(rid, checkpoint)
        if state is None:
            raise ValueError(f"run {rid} has no {checkpoint!r} checkpoint"
                             + (": add 'weights' to probes.names" if checkpoint == "final" else ""))
        return self.configs[rid].build_model(state).eval()
