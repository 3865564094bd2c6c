"""What a command's image arguments name: files, folders, ``-`` (standard input) or URLs.

Files and folders are read where they lie. Standard input and ``http(s)://`` URLs are read
into memory, never to disk, with the same size limit as a file; a URL that cannot be
fetched becomes that input's error, as an unreadable file does. A URL has
``URL_DEADLINE_S`` in all, however slowly its server sends, and redirects are followed
only to http(s) URLs, at most ``MAX_REDIRECTS`` of them.
"""

from __future__ import annotations

import http.client
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.parse import urlsplit

from agelens import __version__
from agelens.batch import ImageResult, InMemory, Source, collect_images
from agelens.pipeline.images import MAX_FILE_BYTES, over_file_limit

#: Seconds to wait for a URL's server, each time it is read from.
URL_TIMEOUT_S = 30.0
#: Seconds a URL may take in all, from connecting to its last byte.
URL_DEADLINE_S = 60.0
MAX_REDIRECTS = 5
STDIN = "-"


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects to http(s) only (urllib would follow one to ``ftp://`` too), and few."""

    max_redirections = MAX_REDIRECTS

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        if urlsplit(newurl).scheme.lower() not in ("http", "https"):
            raise urllib.error.URLError(f"a redirect to {urlsplit(newurl).scheme}:// refused")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpOnlyRedirects)


class SourceError(Exception):
    """An argument that names no image source: the message says why."""


def is_url(argument: str) -> bool:
    return urlsplit(argument).scheme.lower() in ("http", "https")


def resolve_sources(arguments: list[str]) -> list[Source | ImageResult]:
    """Each argument's sources in order: folders walked, ``-`` and URLs read into memory.

    A URL that fails, or an empty standard input, gives its failed result in its place,
    reported with the other unreadable inputs. Raises :class:`SourceError` for ``-``
    given twice or standard input over the size limit.
    """
    if arguments.count(STDIN) > 1:
        raise SourceError("'-' (standard input) can be given once")
    sources: list[Source | ImageResult] = []
    for argument in arguments:
        if argument == STDIN:
            data = _read_capped(sys.stdin.buffer)
            empty = ImageResult.failed(STDIN, "empty")
            sources.append(InMemory(STDIN, "stdin.png", data) if data else empty)
        elif is_url(argument):
            sources.append(_fetch(argument))
        else:
            sources.extend(collect_images([Path(argument)]))
    return sources


def _fetch(url: str) -> InMemory | ImageResult:
    """The URL's bytes, or its failed result; in a thread of its own, so that a server
    trickling its headers or body cannot hold the command past ``URL_DEADLINE_S``."""
    deadline = URL_DEADLINE_S
    found: list[InMemory | ImageResult] = []
    fetcher = threading.Thread(target=lambda: found.append(_fetch_now(url)), daemon=True)
    fetcher.start()
    fetcher.join(deadline)
    if not found:
        return ImageResult.failed(url, f"could not be fetched within {deadline:g} s")
    return found[0]


def _fetch_now(url: str) -> InMemory | ImageResult:
    request = urllib.request.Request(url, headers={"User-Agent": f"agelens/{__version__}"})
    try:
        with _OPENER.open(request, timeout=URL_TIMEOUT_S) as response:
            data = _read_capped(response)
    except urllib.error.HTTPError as error:
        return ImageResult.failed(url, f"the server answered {error.code} {error.reason}")
    except (OSError, ValueError) as error:  # URLError is an OSError
        reason = getattr(error, "reason", error)
        return ImageResult.failed(url, f"could not be fetched ({reason})")
    except http.client.HTTPException as error:  # a bad status line, too many headers...
        kind = type(error).__name__
        return ImageResult.failed(url, f"could not be fetched (a broken answer: {kind})")
    except SourceError as error:
        return ImageResult.failed(url, str(error))
    name = PurePosixPath(urlsplit(url).path).name or "download"
    return InMemory(url, name, data)


def _read_capped(stream: BinaryIO) -> bytes:
    data = stream.read(MAX_FILE_BYTES + 1)
    if too_large := over_file_limit(len(data), read_so_far=True):
        raise SourceError(too_large)
    return data
