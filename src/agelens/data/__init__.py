"""Labelled datasets: readers, splits, an overview, and a cache of aligned chips."""
