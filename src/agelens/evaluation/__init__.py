"""Scoring models on labelled data: metrics, figures and HTML reports."""
