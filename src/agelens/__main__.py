"""``python -m agelens``: the same as the ``agelens`` command."""

from agelens.cli.main import app

app(prog_name="agelens")
