"""Tests of analysis_lib; the folders mirror the packages."""
