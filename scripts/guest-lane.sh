#!/usr/bin/env bash
# The cgroup v2 lane of `make test`: the end-to-end tests that do not depend on this host's cgroup v1 layout,
# run for real on a pure cgroup v2 host under systemd (a Debian 13 guest under qemu, scripts/guest-image.sh),
# once per containerd version, against the binaries just built here.
#
#   scripts/guest-lane.sh            (PREDICTIVE_GUEST_VERSIONS, default "1.7 2.1")
#
# What crosses into the guest (9p shares, no copies): the workspace, read-only, at its own path (the built
# binaries and the test archive are under target/); the e2e cache (containerd 1.7/2.1 packages, the busybox image,
# the CRI client), at its own path; and an output directory, $PREDICTIVE_TEST_LOGS/guest (default
# target/test-logs/guest), where the guest writes one nextest log per containerd version (e2e-<version>.log)
# and guest.log (everything it printed). scripts/test.sh counts those logs into its one total.
#
# The guest runs `cargo-nextest` (this host's binary, copied into the output dir) on a nextest archive of the
# predictive-e2e tests with the `guest` profile of tests/nextest.toml (longer timeouts: the guest is emulated,
# about 4-8x slower than this host) and the filter in tests/guest-tests.txt. Bounded: the whole boot is killed
# after PREDICTIVE_GUEST_TIMEOUT seconds (default 2400), each version's nextest run after
# PREDICTIVE_GUEST_VERSION_TIMEOUT seconds (default 900): the guest then saves its process table and the kernel's
# last messages (ps-<version>.txt) and the stopped run's log (e2e-<version>.stopped.log), and runs that version
# once more; scripts/test.sh reports both.
set -uo pipefail
cd "$(dirname "$0")/.."
ws=$(pwd)
versions=${PREDICTIVE_GUEST_VERSIONS:-1.7 2.1}
logs=${PREDICTIVE_TEST_LOGS:-target/test-logs}
mkdir -p "$logs"
out=$(cd "$logs" && pwd)/guest
cache=${PREDICTIVE_E2E_CACHE:-/var/cache/predictive-e2e}
timeout_s=${PREDICTIVE_GUEST_TIMEOUT:-2400}

fail() { echo "guest-lane: $*" >&2; mkdir -p "$out"; echo "guest-lane: $*" > "$out/setup-failed"; exit 1; }

rm -rf "$out"; mkdir -p "$out"
for tool in qemu-system-x86_64 cargo-nextest; do
    command -v "$tool" >/dev/null || fail "$tool is missing (scripts/deps.sh installs it)"
done
img=$(scripts/guest-image.sh) || fail "could not build the guest image"
for v in $versions; do
    scripts/fetch-containerd.sh "$v" >/dev/null || fail "could not fetch containerd $v"
done
scripts/fetch-debs.sh cri-api trixie golang-github-kubernetes-cri-api-dev >/dev/null || fail "could not fetch the CRI api"
# Docker 26 for the docker test (Debian 13's, the guest's own release), fetched here: the guest has no apt lists.
scripts/fetch-debs.sh docker-26 trixie docker.io docker-cli >/dev/null || fail "could not fetch Docker 26"
# The CNI plugins of a user-namespaced pod's network (tests/tests/userns.rs), Debian 13's, the same way.
scripts/fetch-debs.sh cni-plugins trixie containernetworking-plugins >/dev/null || fail "could not fetch the CNI plugins"
# The CRI client's protobuf module, generated here: the guest has no protoc.
PREDICTIVE_E2E_CACHE=$cache /usr/bin/python3 -c 'import sys; sys.path.insert(0, "tests/cri"); import cri; cri.generate()' ||
    fail "could not generate the CRI client's module"
# The images the tests import, built here (the guest's 9p cache may not take the tests' flock).
[ -s "$cache/busybox-image.tar" ] || scripts/make-image.sh "$cache/busybox-image.tar" >/dev/null ||
    fail "could not build the busybox image"
[ -s "$cache/pause-image.tar" ] ||
    scripts/make-image.sh "$cache/pause-image.tar" docker.io/predictive/pause:latest '["sleep","2147483647"]' >/dev/null ||
    fail "could not build the pause image"

# The test binaries, built here (they run on the guest's newer glibc), and the runner.
# PREDICTIVE_GUEST_TESTS="a b" runs those instead of the list (a developer's loop).
# A line of the list is `name` (every version) or `name v1 v2...` (only those versions).
for v in $versions; do
    if [ -n "${PREDICTIVE_GUEST_TESTS:-}" ]; then
        names=$PREDICTIVE_GUEST_TESTS
    else
        names=$(grep -v '^\s*#' tests/guest-tests.txt |
            awk -v v="$v" 'NF == 1 { print $1 } NF > 1 { for (i = 2; i <= NF; i++) if ($i == v) print $1 }')
    fi
    filter=$(tr ' ' '\n' <<<"$names" | grep -v '^\s*$' | sed 's/.*/test(=&)/' | paste -sd'|' | sed 's/|/ | /g')
    [ -n "$filter" ] || fail "tests/guest-tests.txt names no test for containerd $v"
    echo "$filter" > "$out/filter-$v"
done
cargo nextest archive --release -p predictive-e2e --archive-file "$out/e2e.tar.zst" >"$out/archive.log" 2>&1 ||
    { tail -n 20 "$out/archive.log" >&2; fail "cargo nextest archive failed"; }
cp "$(command -v cargo-nextest)" "$out/cargo-nextest"
# A developer's script run in the guest instead of the tests (it finds the workspace and this dir in "$out/env").
[ -n "${PREDICTIVE_GUEST_SCRIPT:-}" ] && cp "$PREDICTIVE_GUEST_SCRIPT" "$out/debug.sh"
cat > "$out/env" <<ENV
PREDICTIVE_GUEST_WS=$ws
PREDICTIVE_GUEST_VERSIONS="$versions"
PREDICTIVE_E2E_CACHE=$cache
PREDICTIVE_GUEST_VERSION_TIMEOUT=${PREDICTIVE_GUEST_VERSION_TIMEOUT:-900}
CI=${CI:-}
ENV

echo "guest-lane: booting $img (containerd $versions) ..."
start=$(date +%s)
# TCG: nested KVM fails on this kind of VM (../shared/PLATFORM.md). snapshot=on: the image is never written.
# panic=1 with -no-reboot: a guest kernel that panics ends qemu at once instead of idling until the timeout. Under
# TCG the guest kernel has taken an int3 where another vCPU was patching a static branch (update_curr 2026-12-02,
# __alloc_pages 2026-12-07, console-panic-<n>.log): an emulator fault, not the tests'; such a boot is run once more.
# guest-inside.sh holds the two keys the tests flipped (tests/README.md).
for boot in 1 2; do
    left=$(( timeout_s - ($(date +%s) - start) ))
    [ "$left" -gt 60 ] || break
    timeout -k 10 "$left" qemu-system-x86_64 -accel tcg,thread=multi -cpu "${PREDICTIVE_GUEST_CPU:-max}" -m 3072 -smp 2 \
        -kernel "$img/vmlinuz" -initrd "$img/initrd.img" \
        -append "root=/dev/vda rw console=ttyS0 quiet panic=1 predictive.ws=$ws" \
        -drive "file=$img/disk.img,if=virtio,format=raw,snapshot=on" \
        -virtfs "local,path=$ws,mount_tag=ws,security_model=none,readonly=on" \
        -virtfs "local,path=$cache,mount_tag=cache,security_model=none" \
        -virtfs "local,path=$out,mount_tag=out,security_model=none" \
        -nographic -no-reboot -serial "file:$out/console.log" -monitor none </dev/null >"$out/qemu.log" 2>&1
    rc=$?
    grep -q "Kernel panic" "$out/console.log" 2>/dev/null || break
    cp "$out/console.log" "$out/console-panic-$boot.log"
    echo "guest-lane: the guest kernel panicked (boot $boot): $(grep -m1 -E 'Oops|BUG|RIP' "$out/console.log")"
    [ "$boot" = 2 ] && echo "guest-lane: the guest kernel panicked twice" > "$out/setup-failed"
    rm -f "$out"/e2e-*.log "$out"/rc-*
done
secs=$(( $(date +%s) - start ))
echo "guest-lane: guest ran ${secs}s (qemu exit $rc)"
[ "$rc" = 124 ] && echo "guest-lane: killed after ${timeout_s}s" > "$out/timed-out"
echo "$secs" > "$out/seconds"
exit 0
