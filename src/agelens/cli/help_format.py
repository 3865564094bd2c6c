"""Help that reads well at 80 columns: no ``<bool>`` beside a flag, no ``<list[str]>``
beside an option given more than once, and ``-h`` as well as ``--help``."""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}


class _ManyValuesArgument(TyperArgument):
    """An argument taking several values: its name (``IMAGES...``) already says so."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


def _tidy(params: list[Any]) -> list[Any]:
    for param in params:
        if isinstance(param, TyperArgument) and param.nargs != 1:
            param.__class__ = _ManyValuesArgument
        if not isinstance(param, TyperOption) or param.metavar is not None:
            continue
        if param.is_flag:
            param.metavar = ""  # a flag takes no value: nothing to show
        elif param.multiple:
            param.metavar = (param.name or "value").upper()
    return params


class TidyCommand(TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return _tidy(super().get_params(ctx))


class TidyGroup(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _tidy(super().get_params(ctx))
