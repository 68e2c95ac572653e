"""What a study writes for its report and its tests: tables, figures and a summary.

A notebook creates one :class:`StudyOutputs` for its ``output_dir`` parameter (the renderer passes
``reports/<study>/``; interactively it defaults to ``data/studies/<study>/``). Every file is written
to a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from ..paths import data_dir


class StudyOutputs:
    """Writes ``<name>.csv``, ``<name>.png`` and ``summary.json`` into one folder."""

    def __init__(self, study: str, output_dir: str | os.PathLike = ""):
        self.study = study
        self.dir = Path(output_dir) if str(output_dir) else data_dir() / "studies" / study
        self.dir.mkdir(parents=True, exist_ok=True)

    def _replace(self, name: str, write) -> Path:
        final = self.dir / name
        tmp = self.dir / f".{name}.{os.getpid()}.tmp"
        write(tmp)
        os.replace(tmp, final)
        return final

    def save_table(self, name: str, table: pd.DataFrame) -> None:
        """``table`` as ``<name>.csv`` (index dropped).

        Returns None, so a notebook cell ending in ``save_table`` prints nothing (a path would
        show this machine's folders in a published report).
        """
        self._replace(f"{name}.csv", lambda p: table.to_csv(p, index=False))

    def save_figure(self, name: str, figure):
        """Write ``figure`` as ``<name>.png`` (110 dpi) and return that PNG for display.

        The figure is closed after saving, and the notebook shows the saved PNG instead of
        drawing the figure a second time: what the report shows is exactly the file on disk,
        and rendering takes half as long.
        """
        import matplotlib.pyplot as plt
        from IPython.display import Image

        path = self._replace(f"{name}.png", lambda p: figure.savefig(p, dpi=110, bbox_inches="tight",
                                                                     format="png"))
        plt.close(figure)
        return Image(data=path.read_bytes(), format="png")

    def save_summary(self, *, title: str, question: str, verdict: pd.DataFrame, runs: dict,
                     params: dict) -> None:
        """``summary.json`` read by the report index: title, question, verdict rows, run counts, params."""
        summary = {"study": self.study, "title": title, "question": question,
                   "verdict": verdict.to_dict(orient="records"), "runs": runs, "params": params}
        text = json.dumps(summary, indent=2, default=str)
        self._replace("summary.json", lambda p: Path(p).write_text(text))
