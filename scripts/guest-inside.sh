#!/bin/sh
# Runs inside the cgroup v2 guest (scripts/guest-lane.sh boots it; scripts/guest-image.sh's unit calls this):
# the e2e tests named in tests/guest-tests.txt, once per containerd version, with the host's test archive.
# Writes /predictive-out/e2e-<version>.log (nextest's output) for scripts/test.sh to count.
set -u
out=/predictive-out
. "$out/env"
ws=$PREDICTIVE_GUEST_WS

echo "guest: kernel $(uname -r), PID 1 $(ps -p 1 -o comm=), systemd $(systemctl is-system-running 2>&1)," \
     "cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.controllers), up $(cut -d' ' -f1 /proc/uptime)s"
# Under TCG the guest kernel dies now and then on an int3 in code that another vCPU is live-patching: a static
# branch flipped while a vCPU runs through it (2026-12-02: the cfs-bandwidth key in update_curr; 2026-12-07 and
# 2026-12-08: the cpuset key in __alloc_pages and get_page_from_freelist). Each key flips when the first cgroup
# using its controller appears or the last one goes. Writing the root's cgroup.subtree_control ourselves does not
# hold them: systemd rewrites it to what its units need whenever a unit comes or goes (measured: a CPUQuota unit's
# start and stop took cpuset, then cpu and io, off the root). A unit of the lane's own holds them for the guest's
# life the way kubelet's delegated kubepods.slice does on a Kubernetes node: delegated (every controller stays on
# along its path: the tests' containers may use what a node delegates), pinned to every CPU (the cpuset key) and
# under a finite quota (the cfs-bandwidth key).
systemd-run -q --unit=predictive-lane-pin -p Delegate=yes -p "AllowedCPUs=0-$(($(nproc) - 1))" \
    -p CPUQuota=$((100 * $(nproc) * 100))% sleep infinity ||
    echo "guest: could not start predictive-lane-pin (the static keys may flip while the tests run)"
for c in $(cat /sys/fs/cgroup/cgroup.controllers); do
    echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
done
echo "guest: root controllers [$(cat /sys/fs/cgroup/cgroup.subtree_control)], system.slice" \
     "[$(cat /sys/fs/cgroup/system.slice/cgroup.subtree_control)]," \
     "pin $(cat /sys/fs/cgroup/system.slice/predictive-lane-pin.service/cpu.max 2>&1)"
mkdir -p /tmp/nextest
# Binaries executed from a 9p share page-fault through it (ctr --version: 5-10 s under emulation): the guest runs
# local copies of the containerd packages, the images and our binaries.
cache=/var/cache/pe2e-local
mkdir -p "$cache" /opt/predictive/bin
for f in busybox-image.tar pause-image.tar cri-api cri-py docker-26; do
    [ -e "$PREDICTIVE_E2E_CACHE/$f" ] && cp -a "$PREDICTIVE_E2E_CACHE/$f" "$cache/"
done
# The CNI plugins where Debian puts them (tests/src/cni.rs CNI_BIN_DIR).
if [ -d "$PREDICTIVE_E2E_CACHE/cni-plugins/usr/lib/cni" ]; then
    mkdir -p /usr/lib/cni && cp -a "$PREDICTIVE_E2E_CACHE/cni-plugins/usr/lib/cni/." /usr/lib/cni/
fi
for v in $PREDICTIVE_GUEST_VERSIONS; do
    mkdir -p "$cache/containerd-$v/usr/bin"
    for b in containerd ctr containerd-shim-runc-v2; do
        cp "$PREDICTIVE_E2E_CACHE/containerd-$v/usr/bin/$b" "$cache/containerd-$v/usr/bin/"
    done
    touch "$cache/containerd-$v/.complete"
done
for b in containerd-shim-predictive-v2 predictived predictivectl predictive-hook; do
    [ -f "$ws/target/release/$b" ] && cp "$ws/target/release/$b" /opt/predictive/bin/
done
# A developer's own script instead of the tests (PREDICTIVE_GUEST_SCRIPT=FILE scripts/guest-lane.sh).
if [ -f "$out/debug.sh" ]; then sh "$out/debug.sh"; exit; fi
# One nextest run of version $1's tests into log $2, bounded (each test is also capped by the guest profile of
# tests/nextest.toml): a hang that nextest cannot end (a process in uninterruptible sleep, a wedged emulated
# device) costs this run, not the lane. Returns nextest's exit code (124/137: stopped by the bound).
run_version() {
    CI=$CI PREDICTIVE_E2E_CONTAINERD=$1 PREDICTIVE_E2E_CACHE=$cache PREDICTIVE_E2E_SHIM_DIR=/opt/predictive/bin PREDICTIVE_E2E_GUEST=1 PREDICTIVE_E2E_ROUNDS=5 \
        timeout -k 20 "$PREDICTIVE_GUEST_VERSION_TIMEOUT" "$out/cargo-nextest" nextest run --archive-file "$out/e2e.tar.zst" --workspace-remap "$ws" \
        --extract-to /tmp/nextest --extract-overwrite --config-file "$ws/tests/nextest.toml" --profile guest \
        -E "$(cat "$out/filter-$1")" >"$2" 2>&1
}
PREDICTIVE_GUEST_VERSION_TIMEOUT=${PREDICTIVE_GUEST_VERSION_TIMEOUT:-900}
for v in $PREDICTIVE_GUEST_VERSIONS; do
    echo "=== guest: e2e on containerd $v (cgroup v2, systemd) ==="
    start=$(cut -d' ' -f1 /proc/uptime)
    run_version "$v" "$out/e2e-$v.log"
    rc=$?
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        # Stopped: what was running and what the kernel said go beside the log (scripts/test.sh prints them and
        # names the unfinished tests in its summary), then the version runs once more; the stopped run stays on
        # record as e2e-<version>.stopped.log.
        echo "guest: containerd $v: nextest stopped after ${PREDICTIVE_GUEST_VERSION_TIMEOUT}s" >> "$out/e2e-$v.log"
        { ps -eo pid,ppid,stat,wchan:30,etimes,args --sort=start_time; echo "--- dmesg ---"; dmesg | tail -n 40; } \
            > "$out/ps-$v.txt" 2>&1
        mv "$out/e2e-$v.log" "$out/e2e-$v.stopped.log"
        echo "guest: containerd $v stopped after ${PREDICTIVE_GUEST_VERSION_TIMEOUT}s; running it again"
        run_version "$v" "$out/e2e-$v.log"
        rc=$?
    fi
    echo "exit $rc" >> "$out/e2e-$v.log"
    echo "$rc" > "$out/rc-$v"
    grep -E '^\s*(PASS|FAIL|SIGSEGV|TIMEOUT|SKIP)|Summary \[' "$out/e2e-$v.log"
    journalctl -b --no-pager -q > "$out/journal-$v.log" 2>/dev/null
    echo "guest: containerd $v took $(awk -v s="$start" '{printf "%d", $1 - s}' /proc/uptime)s"
done
echo "guest: done, up $(cut -d' ' -f1 /proc/uptime)s"
