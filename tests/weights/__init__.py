"""Tests of analysis_lib.weights; the folders mirror the packages."""
