"""Your own model, data and loss as a run family: registered by name, run by the grid, the store and Dask."""
