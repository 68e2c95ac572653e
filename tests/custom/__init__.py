"""Tests of analysis_lib.custom: your own model, data and loss as a run family."""
