"""Publishing: render study notebooks to self-contained HTML reports, the index and the claims page.

- :mod:`.render`: papermill -> executed notebook -> HTML, render records, the index;
- :mod:`.studies`: which studies and parameter sets exist; :mod:`.params`: user parameter files;
- :mod:`.html`, :mod:`.fragments`, :mod:`.index`, :mod:`.claims`: the published pages;
- :mod:`.portable`: no absolute path of the rendering machine in what is published;
- :mod:`.outputs`: what a notebook writes (tables, figures, summary); :mod:`.tables`: Stylers.
"""
