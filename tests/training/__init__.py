"""Tests of analysis_lib.training; the folders mirror the packages."""
