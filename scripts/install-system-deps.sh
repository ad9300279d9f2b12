#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages the pipeline runs: git, Node.js >= 18 with npm,
# podman and nginx (the local deploy target), dockerd and debootstrap (the scale-out tests),
# PostgreSQL (server binaries for test databases), Redis,
# slirp4netns (the install stage's route out of its network namespace), Python venv support, headless
# Chromium for the sample app's Playwright e2e tests (`playwright install` cannot download here); then,
# from the npm registry, the Node package managers: corepack, pnpm 9 and yarn 1.
# Idempotent: checks first, installs only what is missing. Needs root (or sudo) to install.
set -euo pipefail

missing=()
command -v git >/dev/null || missing+=(git)
command -v redis-server >/dev/null || missing+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
python3 -c "import venv, ensurepip" 2>/dev/null || missing+=(python3-venv)
command -v setpriv >/dev/null && command -v unshare >/dev/null || missing+=(util-linux)
# The install stage's route out of its network namespace (stages reach nothing of this machine's loopback).
command -v slirp4netns >/dev/null || missing+=(slirp4netns)
# ip (iproute2): the install stage's namespace gets a prohibit route to each of this machine's own addresses.
command -v ip >/dev/null || [ -x /usr/sbin/ip ] || missing+=(iproute2)
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
# The hostile tests compile a static chroot-escape probe (a Dockerfile RUN step that leaves buildah's chroot).
command -v gcc >/dev/null || missing+=(gcc)
dpkg -s libc6-dev >/dev/null 2>&1 || missing+=(libc6-dev)
# The scale-out tests (sevenp_pipeline_tests/scale_out): a Docker engine of their own (dockerd from
# Debian's docker.io, started with its own socket; the system service is not used) and debootstrap
# for the locally bootstrapped Debian base image (no Docker Hub).
command -v dockerd >/dev/null || [ -x /usr/sbin/dockerd ] || missing+=(docker.io)
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
# docker-compose 1.29 (Debian's): the scale-out tests run docker/compose.yaml with it.
command -v docker-compose >/dev/null || missing+=(docker-compose)
# The local deploy target: podman runs the app's containers (runc, cgroupfs, from the project's
# containers.conf); nginx is each environment's front door. The pipeline starts its own nginx master
# per environment on a loopback port: the system nginx service (if the package starts one) is not used.
command -v podman >/dev/null || missing+=(podman)
# podman --init needs catatonit, only a Recommends of podman (skipped by --no-install-recommends below).
[ -x /usr/libexec/podman/catatonit ] || missing+=(catatonit)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  missing+=(nodejs npm)
elif [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 18 ]; then
  echo "Node.js $(node --version) is too old: the pipeline and the sample app need Node.js >= 18" >&2
  exit 1
fi

SUDO=""
need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "run as root or install: $*" >&2; exit 1; }
    SUDO=sudo
  fi
}

if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  need_root "${missing[@]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # --no-install-recommends keeps the postgresql package from pulling in extras; the pipeline
  # starts its own servers on free loopback ports and never uses the system cluster.
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Node package managers, from the npm registry (Debian's nodejs has no corepack, and packages no pnpm
# or yarn 1). corepack runs the exact version an app pins in package.json "packageManager"
# (`corepack pnpm install ...`); pnpm 9 and yarn 1 on PATH serve apps that pin none.
# corepack 0.34 needs Node >= 20.10; 0.33 still runs on Node 18.17+. Both know npm's current signing keys.
# The corepack npm package also links pnpm/yarn shims (as `corepack enable` would): install it first and
# on its own, then pnpm and yarn in place of those shims; a shim does not count as installed.
real_tool() {
  local path
  path="$(command -v "$1")" || return 1
  case "$(readlink -f "$path")" in */corepack/*) return 1 ;; esac
}
npm_global() {
  echo "installing from npm: $*"
  need_root "$@"
  $SUDO npm install --global --no-audit --no-fund "$@"
}
if ! command -v corepack >/dev/null; then
  if [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
    npm_global corepack@0.33
  else
    npm_global corepack@0.34
  fi
fi
node_tools=()
real_tool pnpm || node_tools+=(pnpm@9)
real_tool yarn || node_tools+=(yarn@1)
if [ ${#node_tools[@]} -gt 0 ]; then
  # npm refuses to replace another package's links (EEXIST): remove corepack's shims, and only those.
  npm_bin="$(npm prefix --global)/bin"
  for shim in pnpm pnpx yarn yarnpkg; do
    case "$(readlink -f "$npm_bin/$shim" 2>/dev/null)" in */corepack/*) need_root; $SUDO rm -f "$npm_bin/$shim" ;; esac
  done
  npm_global "${node_tools[@]}"
fi

# The unprivileged user the stages of pushed branches run as (sevenp_pipeline/sandbox): never root.
# Needed only where the pipeline runs as root; SEVENP_STAGE_USER names another one.
stage_user="${SEVENP_STAGE_USER:-sevenp-stage}"
if [ "$(id -u)" -eq 0 ] && ! id "$stage_user" >/dev/null 2>&1; then
  echo "creating the stage user: $stage_user"
  useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$stage_user"
fi
