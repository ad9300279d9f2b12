"""The read-only HTTP server of the artifact store, so the links in Dagster's metadata open in the
browser (Chromium refuses ``file://`` links from an http page). A ``LocalArtifactStore`` is served
from its folder; with ``SEVENP_ARTIFACTS=s3`` the S3 bucket is served through the store's read and
list methods (``StoreServer``: same routes, pages and refusals; any machine with read access to the
bucket can run it).

``python -m sevenp_pipeline.resources.artifact_server --root DIR --port P`` (``make dev`` and
``make demo`` run it under their supervisor, on the UI's port + 1). Routes, and nothing else:

- ``/``: the apps; ``/<app>/``: its commits, newest first; ``/<app>/<sha>/``: the commit's index
  page (every artifact with its size and a link);
- ``/<app>/<sha>/<name...>``: one artifact. Text reports render inline (``text/plain``; HTML reports
  as ``text/html`` in a CSP sandbox); binary files and files over 5 MB download (``attachment``).
  Files are streamed, never read whole.

Artifacts come from untrusted branches (a test report, an HTML coverage page), so:

- every response carries ``X-Content-Type-Options: nosniff`` and ``Content-Security-Policy: sandbox``
  (no scripts, an opaque origin: a hostile branch's HTML cannot read other artifacts or this server);
- a path is refused (404) when it is not made of plain names (``..``, ``.``, empty segments, encoded
  ``/`` or ``\\`` or NUL in the raw request), when any part of it below the store root is a symlink
  (pointing out of the store or to another commit's file alike), or when it resolves outside the root;
- no folder below a commit is listed; only GET and HEAD are answered; it binds 127.0.0.1 by default.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sevenp_pipeline.config.settings import Settings
from sevenp_pipeline.files import private_dir
from sevenp_pipeline.resources.artifacts import ArtifactStore, Entry, LocalArtifactStore, entries, folders

INLINE_LIMIT = 5 * 1024 * 1024  # above: downloaded, whatever the type
TEXT = "text/plain; charset=utf-8"
# Rendered inline. Scripts are served as text: even a sandboxed page must not get them as scripts.
INLINE_TYPES = {
    **dict.fromkeys((".log", ".txt", ".xml", ".json", ".jsonl", ".sarif", ".spdx", ".md", ".lcov", ".info", ".tap",
                     ".csv", ".yaml", ".yml", ".js", ".mjs", ".ts", ".map"), TEXT),
    ".html": "text/html; charset=utf-8", ".htm": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".webp": "image/webp",
}
DOWNLOAD_TYPES = {".gz": "application/gzip", ".tgz": "application/gzip", ".zip": "application/zip",
                  ".webm": "video/webm"}
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"content-security-policy", b"sandbox"),
                    (b"referrer-policy", b"no-referrer")]
# Separators and NUL percent-encoded in the raw path: a decoded "/" would silently join two names.
_ENCODED_SEPARATOR = re.compile(rb"%(2f|5c|00)", re.IGNORECASE)
_NOT_FOUND = "not found\n"


def _not_found() -> Response:
    return PlainTextResponse(_NOT_FOUND, status_code=404)


def _parts(scope: Scope) -> tuple[list[str], bool] | None:
    """The request path's names and whether it ends with ``/``; None unless every name is plain
    (no ``.``, ``..``, empty name, backslash, NUL, or separator percent-encoded in the raw path)."""
    path: str = scope["path"]
    raw: bytes = scope.get("raw_path") or path.encode()
    if _ENCODED_SEPARATOR.search(raw) or "\x00" in path or not path.startswith("/"):
        return None
    is_dir = path.endswith("/")
    parts = (path[1:-1] if is_dir else path[1:]).split("/")
    if parts == [""]:
        parts = []
    if any(p in ("", ".", "..") or "\\" in p for p in parts):
        return None
    return parts, is_dir


class SecurityHeaders:
    """ASGI middleware: the security headers on every response, errors and redirects included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in SECURITY_HEADERS}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": [*kept, *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_secured)


class ArtifactServer:
    """Resolves request paths inside the store root; the handler of the app's single route."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def locate(self, parts: list[str]) -> Path | None:
        """``root/<parts>`` when every part is a plain name, nothing on the way is a symlink, and it
        exists and stays under the root; else None."""
        path = self.root
        for part in parts:
            path = path / part
            try:
                if stat.S_ISLNK(os.lstat(path).st_mode):
                    return None
            except (OSError, ValueError):
                return None
        resolved = path.resolve()
        if resolved != path or not (resolved == self.root or resolved.is_relative_to(self.root)):
            return None
        return path

    def handle(self, request: Request) -> Response:
        parsed = _parts(request.scope)
        found = self.locate(parsed[0]) if parsed is not None else None
        if parsed is None or found is None:
            return _not_found()
        parts, is_dir = parsed
        if len(parts) <= 2:  # the root, an app, a commit: folders, listed
            if not found.is_dir():
                return _not_found()
            if not is_dir:  # relative links on the page need the slash; relative, so a proxy's prefix stays
                return RedirectResponse(quote(parts[-1], safe="") + "/", status_code=308)
            return HTMLResponse(self.page(parts, found))
        if is_dir or not stat.S_ISREG(found.stat().st_mode):
            return _not_found()  # nothing below a commit is listed
        return self.file(found)

    def file(self, path: Path) -> Response:
        info = path.stat()
        media, download = _media(path.name, info.st_size)
        if not download:
            return FileResponse(path, media_type=media, stat_result=info)
        return FileResponse(path, media_type=media, stat_result=info, filename=path.name,
                            content_disposition_type="attachment")

    def page(self, parts: list[str], folder: Path) -> str:
        if len(parts) <= 1:
            rows = [(f"{n}/", "") for n in self.folders(folder, newest_first=len(parts) == 1)]
        else:
            rows = [(e.name, _size(e.size)) for e in sorted(self.entries(folder), key=lambda e: e.name)]
        return _page(parts, rows)

    @staticmethod
    def folders(folder: Path, *, newest_first: bool) -> list[str]:
        return folders(folder, newest_first=newest_first)

    @staticmethod
    def entries(folder: Path) -> Iterator[Entry]:
        return entries(folder)


class StoreServer:
    """Serves any :class:`ArtifactStore` through its read and list methods (an S3 bucket): the same
    routes, pages, types and refusals as :class:`ArtifactServer`, the store refusing what would
    leave a commit (and S3 has no symlinks)."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    def handle(self, request: Request) -> Response:
        parsed = _parts(request.scope)
        if parsed is None:
            return _not_found()
        parts, is_dir = parsed
        try:
            if len(parts) <= 2:
                rows = self.listing(parts)
                if rows is None:
                    return _not_found()
                if not is_dir:
                    return RedirectResponse(quote(parts[-1], safe="") + "/", status_code=308)
                return HTMLResponse(_page(parts, rows))
            return _not_found() if is_dir else self.file(request, parts)  # nothing below a commit is listed
        except ValueError:  # the store refuses the name
            return _not_found()

    def file(self, request: Request, parts: list[str]) -> Response:
        opened = self.store.open(app=parts[0], sha=parts[1], name="/".join(parts[2:]))
        if opened is None:
            return _not_found()
        media, download = _media(parts[-1], opened.size)
        headers = {"content-length": str(opened.size)}
        if download:
            headers["content-disposition"] = f"attachment; filename*=utf-8''{quote(parts[-1], safe='')}"
        if request.method == "HEAD":
            opened.close()
            return Response(b"", media_type=media, headers=headers)
        return StreamingResponse(opened.chunks, media_type=media, headers=headers)

    def listing(self, parts: list[str]) -> list[tuple[str, str]] | None:
        """The rows of the root's, an app's or a commit's page; None when the app or commit has nothing stored."""
        if not parts:
            return [(f"{n}/", "") for n in self.store.apps()]
        if len(parts) == 1:
            rows = [(f"{n}/", "") for n in self.store.commits(parts[0])]
        else:
            rows = [(e.name, _size(e.size)) for e in self.store.artifacts(parts[0], parts[1])]
        return rows or None


def _media(name: str, size: int) -> tuple[str, bool]:
    """The media type of a file named ``name`` and whether it downloads (an attachment)."""
    suffix = Path(name).suffix.lower()
    media = INLINE_TYPES.get(suffix)
    if media is not None and size <= INLINE_LIMIT:
        return media, False
    return media or DOWNLOAD_TYPES.get(suffix) or "application/octet-stream", True


def _page(parts: list[str], rows: list[tuple[str, str]]) -> str:
    if not parts:
        return _html("Artifacts", "Apps", rows)
    if len(parts) == 1:
        return _html(f"Artifacts of {parts[0]}", "Commits, newest first", rows, up=True)
    return _html(f"{parts[0]} {parts[1][:12]}", f"Artifacts of commit {parts[1]}", rows, up=True)


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    scaled = float(size)
    for unit in ("KB", "MB", "GB"):
        scaled /= 1024
        if scaled < 1024 or unit == "GB":
            break
    return f"{scaled:.1f} {unit}"


def _html(title: str, heading: str, rows: list[tuple[str, str]], *, up: bool = False) -> str:
    """A plain page (no scripts): a table of links relative to the page's own folder."""
    body = "".join(
        f'<tr><td><a href="{html.escape("/".join(quote(p, safe="") for p in name.split("/")))}">'
        f"{html.escape(name)}</a></td><td>{html.escape(size)}</td></tr>"
        for name, size in rows) or '<tr><td colspan="2">(none)</td></tr>'
    parent = '<p><a href="../">..</a></p>' if up else ""
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;margin:2em}td{padding:0 1em 0 0}</style></head>"
            f"<body><h1>{html.escape(heading)}</h1>{parent}<table>{body}</table></body></html>")


def create_app(root: Path | str | ArtifactStore) -> ASGIApp:
    """The ASGI app serving ``root`` read-only: a folder (a LocalArtifactStore's root; a local store is
    served from its folder, with the symlink refusals) or any other store through its read methods."""
    if isinstance(root, LocalArtifactStore):
        root = root.root
    server: ArtifactServer | StoreServer = (StoreServer(root) if isinstance(root, ArtifactStore)
                                            else ArtifactServer(Path(root)))
    app = Starlette(routes=[Route("/{rest:path}", server.handle, methods=["GET", "HEAD"])])
    return SecurityHeaders(app)


def served_store(root: str | None, settings: Settings) -> Path | ArtifactStore:
    """What the server serves: ``root`` when given, else the settings' store: the home's ``artifacts/``
    folder (made as the store makes it: the server can start before the first artifact), or the S3
    bucket (``SEVENP_ARTIFACTS=s3``; its ``dg.EnvVar`` keys resolved here, outside a Dagster run)."""
    if root or settings.artifacts != "s3":
        folder = Path(root) if root else settings.artifacts_dir
        private_dir(folder)
        return folder
    from sevenp_pipeline.resources.artifacts_s3 import s3_artifact_store  # noqa: PLC0415 (boto3: S3 only)

    return s3_artifact_store(settings).process_config_and_initialize()


def main(argv: list[str] | None = None) -> int:
    import uvicorn  # noqa: PLC0415 (only the server process needs it)

    parser = argparse.ArgumentParser(prog="python -m sevenp_pipeline.resources.artifact_server",
                                     description="Serve the artifact store read-only over HTTP.")
    parser.add_argument("--root", help="the store's folder (default: the settings' store: the pipeline home's "
                                       "artifacts/, or the S3 bucket with SEVENP_ARTIFACTS=s3)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3001)
    args = parser.parse_args(argv)
    uvicorn.run(create_app(served_store(args.root, Settings.from_env())), host=args.host, port=args.port,
                log_level="warning", access_log=False, server_header=False, proxy_headers=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
