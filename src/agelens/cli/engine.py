"""``predict --engine ray``: the run on a Ray cluster, its progress and its messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agelens.cli.common import err, fail, progress_bar


def predict_on_ray(
    sources: list[str],
    out: Path | None,
    *,
    address: str | None,
    actors: int | None,
    resume: bool,
    refused: list[str],
    **options: Any,
) -> None:
    """Run the job; exit 1 when some images could not be read, 2 on a usage error."""
    if refused:
        raise fail(f"--engine ray writes rows to --out; it does not take {', '.join(refused)}", 2)
    if len(sources) != 1 or out is None:
        raise fail("--engine ray takes one SRC (folder, list file or glob) and --out PATH", 2)
    try:
        from agelens.distributed import job
    except ImportError as error:
        raise fail("--engine ray needs Ray: pip install 'agelens[ray]'", 2) from error
    written = [0]
    with progress_bar(2**31) as progress:
        task = progress.add_task("Estimating on Ray", total=None)

        def advanced(images: int) -> None:
            written[0] += images
            progress.advance(task, images)

        def started(todo: int, done: int) -> None:
            if done:
                err.print(f"resuming: {done} image(s) already in {out}", highlight=False)
            progress.update(task, total=todo)

        try:
            failed = job.run(
                sources[0],
                out,
                address=address,
                actors=actors,
                resume=resume,
                on_start=started,
                on_images=advanced,
                **options,
            )
        except job.OutputCheckError as error:
            raise fail(str(error)) from error
        except (OSError, ValueError) as error:  # FileExistsError, ConnectionError among them
            raise fail(str(error), 2) from error
        except KeyboardInterrupt:
            # The writer has closed: only whole parts (or whole lines) are in the output.
            raise fail(
                f"stopped: {written[0]} image(s) of this run are in {out}, complete; run the "
                "same command with --resume to go on",
                130,
            ) from None
    err.print(f"rows written to {out}", highlight=False)
    if failed:
        raise fail(f"{failed} image(s) could not be read; their rows carry the error")
