"""Tests of analysis_lib.runs; the folders mirror the packages."""
