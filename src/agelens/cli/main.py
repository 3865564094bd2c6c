"""The ``agelens`` command: predict, gate, verify, models, evaluate, serve (and eda, train,
calibrate)."""

from __future__ import annotations

import copy
import os
import sys
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.padding import Padding

from agelens import __version__, strict_json
from agelens.cli.calibrate import calibrate
from agelens.cli.common import (
    GenderModelOption,
    JsonOption,
    ModelOption,
    PrecisionOption,
    err,
    fail,
    out,
    require_bundle,
)
from agelens.cli.decisions import gate, verify
from agelens.cli.evaluate import evaluate
from agelens.cli.help_format import HELP_OPTIONS, TidyCommand, TidyGroup
from agelens.cli.predict import predict
from agelens.cli.train import eda, train
from agelens.cli.video import video
from agelens.models.bundles import (
    DEFAULT_BUNDLE,
    DEFAULT_GENDER_BUNDLE,
    GENDER,
    describe_builtin_bundles,
)

#: The largest upload limit ``serve`` accepts: far above any photo.
MAX_UPLOAD_MB = 100.0

app = typer.Typer(
    help="AgeLens: estimate people's ages from photos of their faces.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Markdown: docstring paragraphs wrap to the terminal, `code` shows as code.
    rich_markup_mode="markdown",
    cls=TidyGroup,
    context_settings=HELP_OPTIONS,
)


def _show_version(asked: bool) -> None:
    if asked:
        out.print(f"agelens {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """AgeLens: estimate people's ages from photos of their faces."""


def models(as_json: JsonOption = False) -> None:
    """List the models that come with AgeLens (age networks, face detector), with licences."""
    rows = describe_builtin_bundles()
    if as_json:
        sys.stdout.write(strict_json.dumps(rows) + "\n")
        return
    for row in rows:
        # One block per model: readable at 80 columns, where a wide table folds words.
        use = "research use only" if row["research_only"] else "any use"
        default = " (default)" if row["default"] else ""
        out.print(
            f"[bold]{row['name']}[/]{default} · {row['task']} · {row['licence']} · {use}",
            highlight=False,
        )
        lines = [row["description"], f"authors: {row['attribution']}", f"source: {row['source']}"]
        if row["task"] == "age":
            lines.append("precisions: " + ", ".join(row["precisions"]))
        if row["provenance"]:
            lines.append(row["provenance"])
        figures = row["figures"]
        if figures:
            measured = "; ".join(f"{k} {v}" for k, v in figures.items() if k != "command")
            lines.append(f"measured: {measured} ({figures.get('command', '')})")
        for line in lines:
            out.print(Padding(escape(line), (0, 0, 0, 2)), highlight=False, soft_wrap=False)
        out.print()


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Server processes, each with its model.")
    ] = 1,
    model: ModelOption = DEFAULT_BUNDLE,
    gender_model: GenderModelOption = DEFAULT_GENDER_BUNDLE,
    precision: PrecisionOption = None,
    max_upload_mb: Annotated[
        float, typer.Option(help="Largest upload accepted, in MB (up to 100).")
    ] = 10,
    max_connections: Annotated[
        int, typer.Option(min=1, help="Connections served at once; more get 503.")
    ] = 64,
    max_connections_per_client: Annotated[
        int | None,
        typer.Option(
            "--per-client",
            min=0,
            help="Connections one client address may hold (default: a quarter of "
            "--max-connections; 0: no limit, as behind a proxy).",
        ),
    ] = None,
) -> None:
    """Serve the REST API (/v1, docs at /docs) and the upload page (/) with uvicorn.

    Set AGELENS_API_KEY to require that key (X-API-Key header) on /v1/*, and
    AGELENS_CORS_ORIGINS (comma-separated) to allow browsers on other origins.
    """
    if not 0 < max_upload_mb <= MAX_UPLOAD_MB:  # NaN fails this too
        raise fail(f"--max-upload-mb must be over 0 and at most {MAX_UPLOAD_MB:g}", 2)
    per_client = (
        max(1, max_connections // 4)
        if max_connections_per_client is None
        else (max_connections_per_client)
    )
    # Before the protocol is imported, which reads it (and for worker processes).
    os.environ["AGELENS_MAX_CONNECTIONS_PER_CLIENT"] = str(per_client)
    os.environ["AGELENS_MAX_CONNECTIONS"] = str(max_connections)
    try:
        import uvicorn

        from agelens.server.wire.protocol import HeaderDeadlineProtocol
    except ImportError as error:
        raise fail("the server needs its extras: pip install 'agelens[server]'", 2) from error
    # Workers are separate processes: they read their settings from the environment.
    require_bundle(gender_model, GENDER)
    os.environ["AGELENS_MODEL"] = model
    os.environ["AGELENS_GENDER_MODEL"] = gender_model
    if precision:
        os.environ["AGELENS_PRECISION"] = precision
    os.environ["AGELENS_MAX_UPLOAD_MB"] = str(max_upload_mb)
    err.print(f"AgeLens on http://{host}:{port}/ (API docs at /docs); photos are never stored.")
    uvicorn.run(
        "agelens.server:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        # Its access log writes each request line whole, query string and all; the
        # app logs a bounded, sanitised line of its own (server/wire/access_log.py).
        access_log=False,
        log_config=_log_config(),
        # A cap on connections; idle keep-alive connections closed after 5 s, headers
        # that take over 10 s closed too; bodies that do not arrive in time are refused
        # by the app itself (408).
        # The protocol refuses connections over the cap with a JSON 503; uvicorn's own
        # limit (plain text) stays one above it, for concurrent tasks alone.
        limit_concurrency=max_connections + 1,
        timeout_keep_alive=5,
        http=HeaderDeadlineProtocol,
    )


def _log_config() -> dict[str, Any]:
    """uvicorn's logging, with AgeLens's own loggers (access lines, refusals) shown too."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["agelens"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


for command in (predict, gate, verify, video, models, evaluate, serve, eda, train, calibrate):
    app.command(cls=TidyCommand, context_settings=HELP_OPTIONS)(command)
