"""Tests of analysis_lib.curvature; the folders mirror the packages."""
