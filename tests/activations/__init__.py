"""Tests of analysis_lib.activations; the folders mirror the packages."""
