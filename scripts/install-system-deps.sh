#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages the pipeline runs: git, Node.js >= 18 with npm,
# PostgreSQL (server binaries for test databases), Redis, Python venv support, and headless
# Chromium for the sample app's Playwright e2e tests (`playwright install` cannot download here).
# Idempotent: checks first, installs only what is missing. Needs root (or sudo) to install.
set -euo pipefail

missing=()
command -v git >/dev/null || missing+=(git)
command -v redis-server >/dev/null || missing+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
python3 -c "import venv, ensurepip" 2>/dev/null || missing+=(python3-venv)
command -v setpriv >/dev/null || missing+=(util-linux)
# Debian's chromium: the e2e stage drives it (CHROMIUM_PATH, default /usr/bin/chromium;
# on Ubuntu the package installs a snap, point CHROMIUM_PATH at its binary).
command -v chromium >/dev/null || missing+=(chromium)
# Images without a Docker daemon: buildah (build), skopeo (copy/inspect), runc (RUN steps),
# Debian's docker-registry (the local registry), a static busybox (the bootstrapped Node base).
command -v buildah >/dev/null || missing+=(buildah)
command -v skopeo >/dev/null || missing+=(skopeo)
command -v runc >/dev/null || missing+=(runc)
command -v docker-registry >/dev/null || missing+=(docker-registry)
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  missing+=(nodejs npm)
elif [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 18 ]; then
  echo "Node.js $(node --version) is too old: the pipeline and the sample app need Node.js >= 18" >&2
  exit 1
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "run as root or install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# --no-install-recommends keeps the postgresql package from pulling in extras; the pipeline
# starts its own servers on free loopback ports and never uses the system cluster.
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
