#!/usr/bin/env bash
# What a container sees and may do under our shim against runc v2's, the same spec for both: mounts with their
# options, capabilities, seccomp, ids, /dev, oom score, rlimits, cgroup files it can write, masked paths,
# namespaces, mknod. Diffs the two; an empty diff per case is parity. Root, after `make build`; not part of
# `make test` (docs/BENCHMARKS.md, "What a container may do, against runc's").
#
#   scripts/isolation-probe.sh [VERSION]        (VERSION: 1.6, 1.7 or 2.1; default 1.6)
#
# Cases: `plain` (as Docker and the CRI plugin run a container: the default seccomp profile, a read-only cgroup
# mount, on cgroup v2 a cgroup namespace of its own), `privileged`, `userns` (--uidmap), `exec` (the probe run
# by `ctr t exec` in a plain container). Outputs stay in $OUT (default /tmp/isolation-probe). SYSTEMD=1 (a systemd
# host) runs every container with the systemd cgroup driver, in a `probe.slice` scope, as a kubelet node does.
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-1.6}
out=${OUT:-/tmp/isolation-probe}
dir=/tmp/iprobe-$$
image=docker.io/predictive/busybox:latest
cache=${PREDICTIVE_E2E_CACHE:-/var/cache/predictive-e2e}
[ "$(id -u)" = 0 ] || { echo "isolation-probe: needs root" >&2; exit 1; }
[ -x target/release/containerd-shim-predictive-v2 ] || { echo "isolation-probe: run 'make build' first" >&2; exit 1; }
mkdir -p "$out" "$dir"
# The cgroups this run leaves: the namespace's parent directories (as runc leaves parents) and, when no broker's
# was there before, the auto-started broker's. Removed at the end when empty; nothing else is touched.
ours=$(for d in /sys/fs/cgroup/*/probe /sys/fs/cgroup/probe; do [ -d "$d" ] || echo "$d"; done)
for d in /sys/fs/cgroup/*/predictived /sys/fs/cgroup/predictived; do [ -d "$d" ] || ours="$ours $d"; done
cleanup() {
    scripts/containerd-down.sh "$dir" >/dev/null 2>&1 || true
    for d in $ours; do [ -d "$d" ] && rmdir "$d" 2>/dev/null; done
    return 0
}
trap cleanup EXIT

cat > "$dir/probe.sh" <<'PROBE'
echo "## mounts"; awk '{s=0; for(i=7;i<=NF;i++) if($i=="-"){s=i;break}; print $5, $6, $(s+1), $(s+3)}' /proc/self/mountinfo | sed -E 's/(size|nr_inodes)=[0-9a-z]+//g; s/snapshots\/[0-9]+/snapshots\/N/g' | sort
echo "## status"; grep -E '^(Cap|NoNewPrivs|Seccomp|Uid|Gid|Groups|Umask)' /proc/self/status
echo "## dev"; ls -ln /dev | awk 'NR>1 {print $1, $3, $4, $NF}' | sort
echo "## misc"; echo "oom_score_adj=$(cat /proc/self/oom_score_adj) umask=$(umask)"; ulimit -a 2>/dev/null | sort
echo "## devices"; cat /sys/fs/cgroup/devices/devices.list 2>/dev/null | sort
echo "## writes"
for f in /proc/sys/kernel/domainname /sys/kernel/profiling /proc/sysrq-trigger /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max /proc/kcore /proc/timer_list /proc/keys; do
    [ -e "$f" ] || { echo "$f absent"; continue; }
    # Opened for writing, nothing written: the privileged case's /proc and /sys are the host's.
    if (: >> "$f") 2>/dev/null; then echo "$f writable"; else echo "$f refused"; fi
    echo "$f reads $(head -c 20 "$f" 2>/dev/null | wc -c) bytes"
done
echo "## ns"; ls /proc/self/ns | sort
echo "## mknod"; if mknod /tmp/sda b 8 0 2>/dev/null; then echo mknod allowed; fi
if head -c1 /tmp/sda >/dev/null 2>&1; then echo disk readable; else echo disk unreadable; fi
PROBE

scripts/containerd-up.sh "$dir" "$version" target/release >/dev/null
. "$dir/env"
ctr() { "$CTR" -a "$CONTAINERD_SOCK" -n probe "$@"; }
[ -s "$cache/busybox-image.tar" ] || scripts/make-image.sh "$cache/busybox-image.tar" >/dev/null
ctr images import "$cache/busybox-image.tar" >/dev/null
v2=false; [ -f /sys/fs/cgroup/cgroup.controllers ] && v2=true
probe=(--mount "type=bind,src=$dir/probe.sh,dst=/probe.sh,options=rbind:ro")
cgroup=(--mount "type=cgroup,src=cgroup,dst=/sys/fs/cgroup,options=ro:nosuid:nodev:noexec")
ns=(); $v2 && ns=(--with-ns cgroup:)
printf 'SystemdCgroup = true\n' > "$dir/systemd.toml"
for rt in predictive runc; do
    r=(--runtime "io.containerd.$rt.v2")
    # ctr cannot combine --runtime-config-path with --uidmap; on a systemd v2 host libcontainer takes its systemd
    # manager for a user-namespaced container anyway.
    systemd() { [ "${SYSTEMD:-0}" = 1 ] && echo "--cgroup probe.slice:$rt:$1 --runtime-config-path $dir/systemd.toml"; }
    # shellcheck disable=SC2046
    ctr run --rm "${r[@]}" $(systemd plain) --seccomp "${cgroup[@]}" "${ns[@]}" "${probe[@]}" "$image" "plain-$rt" sh /probe.sh > "$out/plain-$rt.txt" 2>&1 || true
    # shellcheck disable=SC2046
    ctr run --rm "${r[@]}" $(systemd priv) --privileged "${ns[@]}" "${probe[@]}" "$image" "priv-$rt" sh /probe.sh > "$out/privileged-$rt.txt" 2>&1 || true
    ctr run --rm "${r[@]}" --uidmap 0:200000:65536 --gidmap 0:200000:65536 "${cgroup[@]}" "${ns[@]}" "${probe[@]}" "$image" "userns-$rt" sh /probe.sh > "$out/userns-$rt.txt" 2>&1 || true
    # shellcheck disable=SC2046
    ctr run -d --null-io "${r[@]}" $(systemd exec) --seccomp "${cgroup[@]}" "${ns[@]}" "${probe[@]}" "$image" "exec-$rt" sleep 1000 >/dev/null
    ctr t exec --exec-id probe "exec-$rt" sh /probe.sh > "$out/exec-$rt.txt" 2>&1 || true
    ctr t kill -s SIGKILL "exec-$rt" >/dev/null 2>&1 || true
done
for case in plain privileged userns exec; do
    echo "=== $case (< runc, > ours)"
    diff "$out/$case-runc.txt" "$out/$case-predictive.txt" || true
done
