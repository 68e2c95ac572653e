"""Tests of analysis_lib.studies; the folders mirror the packages."""
