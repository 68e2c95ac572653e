"""Robustness of a verdict: the same claims re-decided under the free choices a fair reader could make.

A study's protocol fixes choices the claim itself does not (how outliers are counted, the bar an
overlap must clear, the optimiser and training length of the runs). A "no" under our choices may
be a "yes" under equally reasonable ones; the reader needs to know which. Each study declares,
next to its protocol, its free choices and their alternative values (a pre-declared grid), and an
``evaluate(setting)`` that returns the study's verdict rows under one setting. Varying one choice
at a time from the protocol's setting (:func:`sensitivity_table`) keeps the grid small and says
which choice a verdict hangs on.

Each claim that reads "no" or "partly" under the protocol then gets a robustness statement
(:func:`robustness`), added to its row by :func:`with_robustness`:

- **robust**: "no under every choice tried" (the same verdict under every alternative that could
  be tested);
- **conditional**: "yes when <choice> = <value>; ..." (some alternative turns it into a yes);
- **fragile**: it moves to inconclusive or partly under some alternative, never to yes.

Alternatives without data for a claim (runs not made for it: "not tested") are listed as not tried;
an alternative that leaves a claim's row as it was (same measurement, rule and verdict: a choice
that does not enter that claim) is not counted for it.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import pandas as pd

SENSITIVITY_COLUMNS = ["claim", "choice", "value", "protocol", "reproduced", "measured", "rule"]
CHECKED = ("no", "partly")  # the verdicts whose robustness a reader asks about


def settings(choices: Mapping[str, Sequence], protocol: Mapping[str, object]) -> list[tuple[str, object, dict]]:
    """The protocol's setting, then each alternative value of each choice with the others at the protocol's.

    Returns:
        ``(choice, value, setting)`` triples; the first is ``("protocol", "as run", protocol)``.

    Raises:
        ValueError: a choice without a protocol value, or a protocol value missing from its choice.
    """
    out: list[tuple[str, object, dict]] = [("protocol", "as run", dict(protocol))]
    for choice, values in choices.items():
        if choice not in protocol or protocol[choice] not in list(values):
            raise ValueError(f"invalid sensitivity grid: choice {choice!r} needs its protocol value "
                             f"{protocol.get(choice)!r} among its values {list(values)}")
        out += [(choice, v, {**protocol, choice: v}) for v in values if v != protocol[choice]]
    return out


def sensitivity_table(evaluate: Callable[[dict], list[dict]], choices: Mapping[str, Sequence],
                      protocol: Mapping[str, object]) -> pd.DataFrame:
    """Every claim's verdict under the protocol and under each one-at-a-time alternative.

    Args:
        evaluate: setting -> the study's verdict rows (dicts with ``claim``, ``reproduced``,
            ``measured``); claims are matched by their text, so it must not name the setting.
        choices: choice -> its values (the protocol's among them). protocol: choice -> value.

    Returns:
        Tidy :data:`SENSITIVITY_COLUMNS`; ``protocol`` True on the protocol's rows, ``value``
        as text; a protocol claim an alternative returns no row for is "not tested" there.
    """
    rows, claims = [], []
    for choice, value, setting in settings(choices, protocol):
        found = {row["claim"]: row for row in evaluate(setting)}
        claims = claims or list(found)  # the protocol's claims; one an alternative lacks is not tested there
        for claim in dict.fromkeys([*claims, *found]):
            row = found.get(claim, {"reproduced": "not tested", "measured": "no data under this choice"})
            rows.append({"claim": claim, "choice": choice, "value": str(value), "protocol": choice == "protocol",
                         "reproduced": row["reproduced"], "measured": row.get("measured", ""),
                         "rule": row.get("rule", "")})
    return pd.DataFrame(rows, columns=SENSITIVITY_COLUMNS)


def robustness(table: pd.DataFrame) -> dict[str, str]:
    """Claim -> its robustness statement, for the claims whose protocol verdict is "no" or "partly"."""
    out = {}
    for claim, rows in table.groupby("claim", sort=False):
        base = rows[rows["protocol"]]
        if base.empty or base["reproduced"].iloc[0] not in CHECKED:
            continue
        verdict, alternatives = base["reproduced"].iloc[0], rows[~rows["protocol"]]
        same = ["reproduced", "measured", "rule"]  # an alternative that changes none of these does not touch the claim
        touching = alternatives[(alternatives[same] != base[same].iloc[0]).any(axis=1)]
        if len(alternatives) and touching.empty:
            out[claim] = "not checked: none of the study's declared choices enters this claim"
            continue
        alternatives = touching
        tried = alternatives[alternatives["reproduced"] != "not tested"]
        untried = alternatives[alternatives["reproduced"] == "not tested"]
        named = lambda d: "; ".join(f"{r.choice} = {r.value}" for r in d.itertuples())  # noqa: E731
        if tried.empty:
            text = "not checked: no alternative choice could be tested"
        elif (tried["reproduced"] == "yes").any():
            text = f"conditional: yes when {named(tried[tried['reproduced'] == 'yes'])}"
        elif (tried["reproduced"] == verdict).all():
            text = f"robust: {verdict} under every choice tried ({len(tried)} alternative{'s' * (len(tried) != 1)})"
        else:
            moved = tried[tried["reproduced"] != verdict]
            text = f"fragile: {', '.join(sorted(set(moved['reproduced'])))} when {named(moved)}; never yes"
        out[claim] = text + (f" (not tried: {named(untried)})" if len(untried) else "")
    return out


def with_robustness(rows: list[dict], table: pd.DataFrame) -> list[dict]:
    """The verdict rows with ``robustness`` set from :func:`robustness` ('' where it does not apply)."""
    found = robustness(table)
    return [{**row, "robustness": found.get(row["claim"], "")} for row in rows]


def decide(evaluate: Callable[[dict], list[dict]], choices: Mapping[str, Sequence],
           protocol: Mapping[str, object]) -> tuple[list[dict], pd.DataFrame]:
    """The protocol's verdict rows with their robustness, and the sensitivity table they come from."""
    table = sensitivity_table(evaluate, choices, protocol)
    return with_robustness(evaluate(dict(protocol)), table), table


def with_alternatives(protocol: Mapping[str, object], alternatives: Mapping[str, Sequence]) -> dict:
    """Choice -> its values: the protocol's value and the declared ``alternatives``, in increasing order."""
    return {name: sorted({protocol[name], *values}) for name, values in alternatives.items()}


def stamped(rows: list[dict], text: str) -> list[dict]:
    """``rows`` with ``text`` (the setting they were decided under) added to each row's rule.

    For a choice that feeds every row of a study (a gate, a fit window): the rows then differ
    across settings even where the verdict and measurement do not, so the choice counts as tried.
    """
    return [{**row, "rule": f"{row['rule']}; {text}" if row.get("rule") else text} for row in rows]
