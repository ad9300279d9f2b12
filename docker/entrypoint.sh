#!/bin/sh
# The run container's entrypoint. The stage sandbox (sevenp_pipeline/sandbox) puts each stage in a
# cgroup of its own under /sys/fs/cgroup/<controller>/sevenp (its memory, pids and cpu limits). Docker
# mounts the container's cgroups read-only; with CAP_SYS_ADMIN (which the sandbox's namespaces need
# anyway) and `cgroupns: private`, this makes the container's OWN cgroup tree writable, so the stages'
# cgroups nest inside the container's, bounded by its limits. Without the capability it changes nothing.
set -e
for controller in memory pids cpu; do
  dir=/sys/fs/cgroup/$controller
  [ -d "$dir" ] && [ ! -w "$dir" ] && mount -o remount,bind,rw "$dir" 2>/dev/null || true
done
# cgroup v2: one tree.
if [ -f /sys/fs/cgroup/cgroup.controllers ] && [ ! -w /sys/fs/cgroup ]; then
  mount -o remount,bind,rw /sys/fs/cgroup 2>/dev/null || true
fi
exec "$@"
