"""Decisions made from estimates: age groups, calibrated intervals, the age gate."""
