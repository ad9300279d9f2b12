"""The web server ``make dev`` and ``make demo`` run beside the Dagster UI: the read-only artifact
store (resources/artifact_server.py) and, under ``/_cockpit/``, each app's branches and environments
page and its SVG status badges, read live from the Dagster instance on every request.

``python -m sevenp_pipeline.cockpit.server --root DIR --port P --ui-url URL``

- ``/_cockpit/``: the apps; ``/_cockpit/<app>/``: its branches and environments;
- ``/_cockpit/<app>/badge/<branch>.svg``: the branch's CI badge (``feature%2Fx.svg`` for ``feature/x``);
- everything else: the artifact store, with its refusals (no traversal, no symlink, no listing outside).
"""

from __future__ import annotations

import argparse
import functools
import html
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import dagster as dg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp

from sevenp_pipeline.cockpit.pages import app_page, branch_badge
from sevenp_pipeline.cockpit.status import AppRef, branches, environments
from sevenp_pipeline.resources.artifact_server import SecurityHeaders, served_store
from sevenp_pipeline.resources.artifact_server import create_app as artifact_app
from sevenp_pipeline.resources.artifacts import ArtifactStore

PREFIX = "/_cockpit"


def create_app(root: Path | str | ArtifactStore, *, instance: Callable[[], dg.DagsterInstance], apps: Sequence[AppRef],
               ui_url: str) -> ASGIApp:
    """``root``: the artifact store's folder, or the store (S3). ``apps``: the configured apps, served under
    their keys. ``instance``: the Dagster instance to read."""
    by_key = {app.key: app for app in apps}

    def index(_request: Request) -> Response:
        items = "".join(f'<li><a href="{html.escape(key)}/">{html.escape(by_key[key].name)}</a></li>'
                        for key in sorted(by_key))
        return HTMLResponse(f"<!doctype html><html><head><meta charset=\"utf-8\"><title>Apps</title></head>"
                            f"<body><h1>Apps</h1><ul>{items}</ul></body></html>")

    def page(request: Request) -> Response:
        app = by_key.get(request.path_params["app"])
        if app is None:
            return PlainTextResponse("not found\n", status_code=404)
        dagster = instance()
        envs = environments(dagster, app)
        return HTMLResponse(app_page(app.name, branches(dagster, app, envs), envs, ui_url=ui_url),
                            headers={"Cache-Control": "no-store"})

    def badge(request: Request) -> Response:
        app, name = by_key.get(request.path_params["app"]), request.path_params["branch"]
        if app is None or not name.endswith(".svg"):
            return PlainTextResponse("not found\n", status_code=404)
        svg = branch_badge(branches(instance(), app), name.removesuffix(".svg"))
        return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})

    cockpit = Starlette(routes=[
        Route(f"{PREFIX}/", index, methods=["GET", "HEAD"]),
        Route(PREFIX + "/{app}/", page, methods=["GET", "HEAD"]),
        Route(PREFIX + "/{app}/badge/{branch:path}", badge, methods=["GET", "HEAD"]),
        Mount("/", app=artifact_app(root)),
    ])
    return SecurityHeaders(cockpit)


def main(argv: list[str] | None = None) -> int:
    import uvicorn  # noqa: PLC0415 (only the server process needs it)

    from sevenp_pipeline.config import ConfigError  # noqa: PLC0415
    from sevenp_pipeline.config.loader import load_app_configs  # noqa: PLC0415
    from sevenp_pipeline.config.settings import Settings  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m sevenp_pipeline.cockpit.server",
                                     description="Serve the artifact store and the apps' branch pages over HTTP.")
    parser.add_argument("--root", help="the store's folder (default: the settings' store: the pipeline home's "
                                       "artifacts/, or the S3 bucket with SEVENP_ARTIFACTS=s3)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3001)
    parser.add_argument("--ui-url", help="the Dagster UI runs link to (default: SEVENP_UI_URL)")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    root = served_store(args.root, settings)
    try:
        configs = load_app_configs(settings.apps_dir)
    except (ConfigError, OSError) as exc:  # a broken app config must not take the artifacts down
        print(f"cockpit: app configs in {settings.apps_dir} not read: {exc}", file=sys.stderr)
        configs = []
    apps = [AppRef(app.name, app.key, tuple(app.deploy_environments)) for app in configs]
    uvicorn.run(create_app(root, instance=functools.cache(dg.DagsterInstance.get), apps=apps,
                           ui_url=args.ui_url or settings.ui_url),
                host=args.host, port=args.port, log_level="warning", access_log=False, server_header=False,
                proxy_headers=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
