"""Tests of analysis_lib.lm; the folders mirror the packages."""
