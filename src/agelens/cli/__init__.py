"""The ``agelens`` command line."""
