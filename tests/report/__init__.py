"""Tests of analysis_lib.report; the folders mirror the packages."""
