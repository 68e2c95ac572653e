"""Tests of analysis_lib.stats; the folders mirror the packages."""
