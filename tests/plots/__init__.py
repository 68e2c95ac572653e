"""Tests of analysis_lib.plots; the folders mirror the packages."""
