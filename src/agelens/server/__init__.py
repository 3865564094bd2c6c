"""The AgeLens web service (install with ``pip install agelens[server]``)."""

from agelens.server.app import create_app
from agelens.server.settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]
