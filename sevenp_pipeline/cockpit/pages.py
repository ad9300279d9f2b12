"""The cockpit's pages: an app's branches and environments as one HTML page, and an SVG status badge
per branch (for the app's README). Every value from a branch (names, commit messages, authors, failure
lines) is HTML-escaped: a commit message is the branch's text, not the page's markup."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime, timezone
from urllib.parse import quote

from sevenp_pipeline.cockpit.status import FAILING, PASSING, RUNNING, BranchStatus, EnvironmentStatus

_COLOURS = {PASSING: "#2e7d32", FAILING: "#c62828", RUNNING: "#f9a825"}
_GREY = "#757575"
_STYLE = """body{font:14px system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}th{background:#f4f4f4}
.passing{color:#2e7d32;font-weight:600}.failing{color:#c62828;font-weight:600}.running{color:#b28704}
code{font-family:ui-monospace,monospace}.failure{color:#c62828}"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if ts else "-"


def _run_link(ui_url: str, run_id: str) -> str:
    return f'<a href="{_e(ui_url.rstrip("/"))}/runs/{_e(run_id)}">{_e(run_id[:8])}</a>' if run_id else "-"


def _flag(value: bool | None) -> str:
    if value is None:
        return "-"
    return '<span class="passing">ok</span>' if value else '<span class="failing">failed</span>'


def _link(url: str) -> str:
    return f'<a href="{_e(url)}">{_e(url)}</a>' if url.startswith(("http://", "https://")) else _e(url)


def app_page(app: str, rows: Sequence[BranchStatus], envs: Sequence[EnvironmentStatus], *, ui_url: str) -> str:
    """One app's branches (head, CI status with the failing stage, run, where it is deployed) and
    environments (live commit, branch, URL, since, health, smoke, run, rollback target)."""
    titles = {r.commit: r.title for r in rows}
    body = [f"<h1>{_e(app)}</h1>", "<h2>Branches</h2>"]
    if rows:
        body.append("<table><tr><th>branch</th><th>status</th><th>head</th><th>author</th><th>run</th>"
                    "<th>deployed to</th><th>badge</th></tr>")
        for r in rows:
            failure = f'<div class="failure">{_e(r.failure)}</div>' if r.failure else ""
            badge = f"badge/{quote(r.branch, safe='')}.svg"
            body.append(
                f"<tr><td><code>{_e(r.branch)}</code></td><td><span class=\"{_e(r.status)}\">{_e(r.status)}</span>"
                f"{failure}</td><td><code>{_e(r.commit[:12])}</code> {_e(r.title)}</td><td>{_e(r.author)}</td>"
                f"<td>{_run_link(ui_url, r.run_id)} {_e(_when(r.created))}</td>"
                f"<td>{_e(', '.join(r.deployed_to) or '-')}</td>"
                f"<td><img alt=\"{_e(r.status)}\" src=\"{_e(badge)}\"></td></tr>")
        body.append("</table>")
    else:
        body.append("<p>No pipeline run for any branch yet.</p>")
    body.append("<h2>Environments</h2>")
    body.append("<table><tr><th>environment</th><th>commit</th><th>branch</th><th>URL</th><th>since</th>"
                "<th>health</th><th>smoke</th><th>run</th><th>rollback to</th></tr>")
    for env in envs:
        if not env.commit:
            body.append(f"<tr><td>{_e(env.environment)}</td><td colspan=\"8\">nothing deployed yet</td></tr>")
            continue
        body.append(
            f"<tr><td>{_e(env.environment)}</td><td><code>{_e(env.commit[:12])}</code> "
            f"{_e(titles.get(env.commit, ''))}</td><td><code>{_e(env.branch or '-')}</code></td>"
            f"<td>{_link(env.url)}</td><td>{_e(_when(env.since))}</td>"
            f"<td>{_flag(env.health)}</td><td>{_flag(env.smoke)}</td><td>{_run_link(ui_url, env.run_id)}</td>"
            f"<td><code>{_e(env.previous[:12] or '-')}</code></td></tr>")
    body.append("</table>")
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{_e(app)}: branches and environments"
            f"</title><style>{_STYLE}</style></head><body>{''.join(body)}</body></html>")


def badge_svg(label: str, status: str) -> str:
    """A shields-style badge: ``label | status``, green, red or amber (grey when unknown)."""
    colour = _COLOURS.get(status, _GREY)
    left, right = max(6 * len(label) + 10, 30), max(6 * len(status) + 10, 30)
    width = left + right
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" role="img" '
            f'aria-label="{_e(label)}: {_e(status)}"><title>{_e(label)}: {_e(status)}</title>'
            f'<rect width="{left}" height="20" fill="#555"/><rect x="{left}" width="{right}" height="20" '
            f'fill="{colour}"/><g fill="#fff" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11" '
            f'text-anchor="middle"><text x="{left / 2}" y="14">{_e(label)}</text>'
            f'<text x="{left + right / 2}" y="14">{_e(status)}</text></g></svg>')


def branch_badge(rows: Sequence[BranchStatus], branch: str) -> str:
    status = next((r.status for r in rows if r.branch == branch), "unknown")
    return badge_svg("ci", status if status in (PASSING, FAILING, RUNNING) else "unknown")
