"""Tests of analysis_lib.landscape; the folders mirror the packages."""
