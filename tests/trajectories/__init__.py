"""Tests of analysis_lib.trajectories; the folders mirror the packages."""
