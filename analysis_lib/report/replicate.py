"""Replication: render a study again on a second, disjoint set of seeds and compare its verdicts.

``python -m analysis_lib replicate 03-hessian-spectrum [--seeds 10 11 12] [--params default]``
renders the study with its seed parameters replaced (:data:`SEED_PARAMETERS`: ``seeds``, and
``twin_seeds``, a subset of them, mapped position by position) into ``reports/replications/``
(a reports folder of its own, with its own index), then compares each verdict row with the same
row of the published report (the same parameter set; rows are matched by their claim text):

- **replicates**: the same verdict;
- **weakens**: a definite verdict (yes, no, partly) on one side and inconclusive on the other,
  or yes/no against partly;
- **contradicts**: yes on one side and no on the other;
- **not tested**: either side is not tested; **missing**: the row exists on one side only.

The comparison is written to ``reports/<study>/replication.json`` (replaced with the study's
folder by its next render, so it always refers to the report it sits beside) and shown in the
index and at the top of the report. Without ``--seeds`` the new seeds are the next ones after
the largest seed used, as many as the original set.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from papermill.iorw import read_yaml_file

from ..validation import ConfigError
from .fragments import read_json
from .studies import notebooks_dir_or_default, params_path, reports_dir_or_default

SEED_PARAMETERS = ("seeds", "twin_seeds")  # twin_seeds: a subset of seeds, mapped with them
REPLICATIONS = "replications"  # the sub-folder of the reports folder that holds replication renders
CLASSES = ("replicates", "weakens", "contradicts", "not tested", "missing")
DEFINITE = ("yes", "no", "partly")


def classify(original: str | None, replication: str | None) -> str:
    """One of :data:`CLASSES` for a verdict and its replication (see the module docstring)."""
    if original is None or replication is None:
        return "missing"
    if "not tested" in (original, replication):
        return "not tested"
    if original == replication:
        return "replicates"
    if {original, replication} == {"yes", "no"}:
        return "contradicts"
    return "weakens"


def compare_verdicts(original: Sequence[dict], replication: Sequence[dict]) -> list[dict]:
    """Per claim (in the original's order, then claims only the replication has): both verdicts and the class."""
    first = {str(r.get("claim")): r.get("reproduced") for r in original}
    second = {str(r.get("claim")): r.get("reproduced") for r in replication}
    claims = list(dict.fromkeys([*first, *second]))
    return [{"claim": c, "original": first.get(c), "replication": second.get(c),
             "class": classify(first.get(c), second.get(c))} for c in claims]


def replication_seeds(parameters: dict, seeds: Sequence[int] | None) -> dict:
    """The seed parameters of a replication: ``seeds`` replaced, ``twin_seeds`` mapped position by position.

    Raises:
        ConfigError: the new seeds overlap the original ones, repeat, are not integers, or are
            fewer than a mapped parameter needs.
    """
    old = parameters.get("seeds")
    if not isinstance(old, list) or not old:
        raise ConfigError("invalid study for replicate: its parameter set has no 'seeds' list")
    if seeds is None:
        start = max(max(v) for k, v in parameters.items() if k in SEED_PARAMETERS and v) + 1
        seeds = list(range(start, start + len(old)))
    seeds = list(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ConfigError(f"invalid parameter --seeds={seeds!r}: must be non-negative integers")
    if len(set(seeds)) != len(seeds) or set(seeds) & set(old):
        raise ConfigError(f"invalid parameter --seeds={seeds!r}: must be distinct and disjoint from the "
                          f"study's seeds {old}")
    mapping = dict(zip(old, seeds))
    out = {"seeds": seeds}
    for name in SEED_PARAMETERS[1:]:
        if name in parameters:
            values = parameters[name]
            if any(v not in mapping for v in values):
                raise ConfigError(f"invalid parameter --seeds={seeds!r}: {name}={values} needs the first "
                                  f"{len(old)} new seeds to pair with {old}")
            out[name] = [mapping[v] for v in values]
    return out


def replicate_study(study: str, param_set: str = "default", seeds: Sequence[int] | None = None, *,
                    reports_dir: str | Path | None = None, notebooks_dir: str | Path | None = None) -> dict:
    """Render ``study`` on new seeds into ``<reports>/replications/`` and compare with the published report.

    Returns:
        The replication record written to ``<reports>/<study>/replication.json``: study,
        param_set, seeds (original and new), finished, rows (:func:`compare_verdicts`), counts.

    Raises:
        ConfigError: bad seeds, or no published report of ``study`` with ``param_set`` to compare with.
        Exception: a failing render (as :func:`~analysis_lib.report.render.render_study`).
    """
    from .render import build_index, render_study, write_atomic

    nb_dir, out_root = notebooks_dir_or_default(notebooks_dir), reports_dir_or_default(reports_dir)
    parameters = read_yaml_file(str(params_path(study, param_set, nb_dir))) or {}
    published = read_json(out_root / study / "summary.json")
    render = read_json(out_root / study / "render.json") or {}
    if published is None or render.get("param_set") != param_set or render.get("extra_parameters"):
        raise ConfigError(f"invalid study {study} for replicate: no published report with the {param_set!r} "
                          f"parameters in {out_root}; run `make report STUDY={study} PARAMS={param_set}` first")
    extra = replication_seeds(parameters, seeds)
    folder = out_root / REPLICATIONS
    render_study(study, param_set, notebooks_dir=nb_dir, reports_dir=folder, extra_parameters=extra)
    build_index(folder, notebooks_dir=nb_dir)
    replicated = read_json(folder / study / "summary.json") or {}
    rows = compare_verdicts(published.get("verdict") or [], replicated.get("verdict") or [])
    record = {"study": study, "param_set": param_set, "original_seeds": parameters["seeds"], "seeds": extra["seeds"],
              "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "report": f"{REPLICATIONS}/{study}.html", "rows": rows,
              "counts": {c: sum(r["class"] == c for r in rows) for c in CLASSES}}
    write_atomic(out_root / study / "replication.json", json.dumps(record, indent=2) + "\n")
    build_index(out_root, notebooks_dir=nb_dir)
    return record


def replication_summary(record: dict | None) -> str | None:
    """``"seeds [5, 6, 7]: 9 replicate, 2 weaken, 0 contradict"`` from a replication record, or None."""
    if not isinstance(record, dict) or not isinstance(record.get("counts"), dict):
        return None
    c = record["counts"]
    text = (f"seeds {record.get('seeds')}: {c.get('replicates', 0)} replicate, {c.get('weakens', 0)} weaken, "
            f"{c.get('contradicts', 0)} contradict")
    extra = [f"{c[k]} {k}" for k in ("not tested", "missing") if c.get(k)]
    return text + (f" ({', '.join(extra)})" if extra else "")
