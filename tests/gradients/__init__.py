"""Tests of analysis_lib.gradients; the folders mirror the packages."""
