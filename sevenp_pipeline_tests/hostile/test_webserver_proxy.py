"""docker/nginx/dagster-webserver.conf, run: the shipped proxy in front of the Dagster webserver lets
nobody in without credentials (GraphQL included), passes people with them on, names them to the
webserver, never forwards their password, and passes the UI's websocket upgrade on."""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt
import pytest

from sevenp_pipeline.config.settings import PROJECT_ROOT
from sevenp_pipeline_tests.httpserver import http_server

pytestmark = pytest.mark.integration

CONF = PROJECT_ROOT / "docker" / "nginx" / "dagster-webserver.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, *, auth: tuple[str, str] | None = None, method: str = "GET", data: bytes | None = None,
         headers: dict[str, str] | None = None) -> int:
    headers = dict(headers or {})
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method, data=data, headers=headers),
                                    timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx (Debian package nginx) is installed by make install")
def test_the_shipped_proxy_requires_credentials_and_passes_people_on() -> None:
    # The workers run as nobody: the htpasswd must be readable by them (0644 in a 0755 folder).
    root = Path(tempfile.mkdtemp(prefix="sevenp-proxy-"))
    root.chmod(0o755)
    try:
        htpasswd = root / "htpasswd"
        htpasswd.write_text(f"alice:{bcrypt.hashpw(b'correct horse', bcrypt.gensalt(rounds=8)).decode()}\n")
        htpasswd.chmod(0o644)
        port = _free_port()
        with http_server() as upstream:
            server_block = (CONF.read_text().replace("@LISTEN@", f"127.0.0.1:{port}")
                            .replace("@UPSTREAM@", upstream.url.removeprefix("http://"))
                            .replace("@HTPASSWD@", str(htpasswd)))
            (root / "logs").mkdir()
            (root / "nginx.conf").write_text(
                "worker_processes 1;\nerror_log stderr;\npid " + str(root / "nginx.pid") + ";\n"
                "events { worker_connections 64; }\n"
                "http {\n access_log off;\n client_body_temp_path " + str(root / "body") + ";\n"
                " proxy_temp_path " + str(root / "proxy") + ";\n" + server_block + "\n}\n")
            nginx = subprocess.Popen([NGINX, "-p", str(root), "-c", str(root / "nginx.conf"), "-g", "daemon off;"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            try:
                base = f"http://127.0.0.1:{port}"
                deadline = time.monotonic() + 10
                while True:
                    try:
                        socket.create_connection(("127.0.0.1", port), timeout=1).close()
                        break
                    except OSError:
                        assert nginx.poll() is None, nginx.stdout.read().decode() if nginx.stdout else ""
                        assert time.monotonic() < deadline
                        time.sleep(0.05)
                launch = b'{"query":"mutation { launchRun { __typename } }"}'
                assert _get(base + "/") == 401
                assert _get(base + "/graphql", method="POST", data=launch,
                            headers={"Content-Type": "application/json"}) == 401
                assert _get(base + "/graphql", auth=("alice", "wrong"), method="POST", data=launch) == 401
                assert upstream.requests == []  # nothing got through
                assert _get(base + "/graphql", auth=("alice", "correct horse"), method="POST", data=launch,
                            headers={"Content-Type": "application/json"}) == 200
                assert _get(base + "/runs", auth=("alice", "correct horse"),
                            headers={"Upgrade": "websocket", "Connection": "Upgrade"}) == 200
                graphql, runs = upstream.requests
                assert graphql.path == "/graphql" and graphql.body == launch
                headers = {k.lower(): v for k, v in graphql.headers.items()}
                assert headers["x-forwarded-user"] == "alice"
                assert "authorization" not in headers  # the password stops at the proxy
                assert {k.lower(): v for k, v in runs.headers.items()}["upgrade"] == "websocket"
            finally:
                nginx.terminate()
                nginx.wait(timeout=10)
    finally:
        shutil.rmtree(root, ignore_errors=True)
