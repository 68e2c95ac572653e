"""Progress bars of long loops (runs of a grid, Lanczos steps).

On by default, off in CI or with ANALYSIS_LIB_PROGRESS=0, and an explicit argument wins over the environment.
"""

from __future__ import annotations

from analysis_lib.runs.progress import progress_bar, progress_enabled


def test_progress_is_quiet_in_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("ANALYSIS_LIB_PROGRESS", raising=False)
    assert progress_enabled() and not progress_enabled(False)
    monkeypatch.setenv("ANALYSIS_LIB_PROGRESS", "0")
    assert not progress_enabled() and progress_enabled(True)
    monkeypatch.delenv("ANALYSIS_LIB_PROGRESS")
    monkeypatch.setenv("CI", "true")
    with progress_bar(10, "lanczos") as bar:
        assert bar.disable
        bar.update(3)
