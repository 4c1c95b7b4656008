#!/usr/bin/env bash
# Everything `make test` runs after deps and build:
#   0. the guard rails: `cargo fmt --all --check`, `cargo clippy --workspace --all-targets -- -D warnings` and the
#      shape checks (scripts/fn-length.py: no production function over 120 lines; scripts/module-cycles.py: no
#      cycle between a crate's top-level modules)
#   1. unit and root tests of every crate:   cargo nextest run --workspace --release (less the e2e suite)
#   2. the end-to-end suite once per containerd version (PREDICTIVE_E2E_VERSIONS, default "1.6 1.7 2.1"),
#      against PREDICTIVE_E2E_RUNTIME (default io.containerd.predictive.v2)
#   3. the cgroup v2 lane: the tests in tests/guest-tests.txt inside a Debian 13 guest (pure cgroup v2, systemd),
#      once per containerd version in PREDICTIVE_GUEST_VERSIONS (default "1.7 2.1"), scripts/guest-lane.sh;
#      PREDICTIVE_GUEST_LANE=0 skips it (a developer's loop; a failure under CI=true)
# and prints one aggregated line: "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."

versions=${PREDICTIVE_E2E_VERSIONS:-1.6 1.7 2.1}
runtime=${PREDICTIVE_E2E_RUNTIME:-io.containerd.predictive.v2}
export PREDICTIVE_E2E_RUNTIME=$runtime
logdir=${PREDICTIVE_TEST_LOGS:-target/test-logs}
mkdir -p "$logdir"
passed=0 failed=0
summary=()

# CI's rule, the same as testkit::in_ci: CI is "true" or "1" (any case). Under CI nothing may be skipped.
in_ci() { case "${CI:-}" in 1 | [Tt][Rr][Uu][Ee]) return 0 ;; *) return 1 ;; esac; }

# Adds the counts from a nextest run's summary line; a run with no summary (a build or setup
# error) counts as one failure.
count() { # name log rc
    local name=$1 log=$2 rc=$3 line p f t
    line=$(grep -E '^\s*Summary \[' "$log" | tail -n1)
    if [ -z "$line" ]; then
        if [ "$rc" = 0 ] && grep -qE 'no tests to run|0 tests run' "$log"; then
            summary+=("$name: no tests"); return
        fi
        failed=$((failed + 1)); summary+=("$name: did not run (exit $rc), see $log"); return
    fi
    p=$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '[0-9]+' || echo 0)
    f=$(grep -oE '[0-9]+ failed' <<<"$line" | grep -oE '[0-9]+' || echo 0)
    t=$(grep -oE '[0-9]+ timed out' <<<"$line" | grep -oE '[0-9]+' || echo 0)
    f=$((f + t))
    if [ "$rc" != 0 ] && [ "$f" = 0 ]; then f=1; fi
    passed=$((passed + p)); failed=$((failed + f))
    summary+=("$name: $p passed, $f failed ($(grep -oE '\[ *[0-9.]+s\]' <<<"$line" | tr -d '[] '))")
}

# Guard rails (scripts/lint.sh): unformatted code, a clippy warning or a failed shape check fails the run like a
# failing test (one entry in the count).
echo "=== lint: rustfmt --check, clippy -D warnings (all targets), function length, module cycles ==="
log=$logdir/lint.log
scripts/lint.sh 2>&1 | tee "$log"
if [ "${PIPESTATUS[0]}" = 0 ]; then
    passed=$((passed + 1)); summary+=("lint: rustfmt, clippy and the shape checks clean")
else
    failed=$((failed + 1)); summary+=("lint: rustfmt, clippy, fn-length or module-cycles failed, see $log")
fi

echo "=== unit and root tests (all crates) ==="
log=$logdir/unit.log
cargo nextest run --workspace --release --no-tests=pass --no-fail-fast \
    -E 'not (package(predictive-e2e) and kind(test))' 2>&1 | tee "$log"
count "unit" "$log" "${PIPESTATUS[0]}"

for v in $versions; do
    echo "=== containerd $v: preparing ==="
    if ! scripts/fetch-containerd.sh "$v" >/dev/null; then
        failed=$((failed + 1)); summary+=("e2e containerd $v: could not fetch containerd $v"); continue
    fi
done
# The CRI test's api.proto and the Docker test's Docker 26 (containerd 1.7 only), from Debian 13, cached: fetched
# here so a cold cache does not eat the tests' time caps (the tests fetch them too when run alone).
scripts/fetch-debs.sh cri-api trixie golang-github-kubernetes-cri-api-dev >/dev/null || true
if [[ " $versions " == *" 1.7 "* ]]; then
    scripts/fetch-debs.sh docker-26 trixie docker.io docker-cli >/dev/null || true
fi

# A guest run that did not reach nextest's summary, or that the guest stopped and ran again: what it was running,
# into the summary, so CI's last lines say what hung. The candidates: tests nextest reported slow (SLOW lines) and
# never finished, and those it was running when it was stopped (SIGTERM lines); processes in uninterruptible sleep
# and the kernel's hung-task lines come from ps-<version>.txt. A stopped first run does not count as a failure
# when the second passes (the emulated guest once wedged for 2250 s with nothing to show): it is on record here.
unfinished() {
    local v=$1 glog=$2 what=${3:-unfinished} t running=() stuck
    for t in $(grep -E '^\s*(SLOW|SIGTERM) ' "$glog" | awk '{print $NF}' | sort -u); do
        grep -qE "^\s*(PASS|FAIL|TIMEOUT|SIGKILL|SIGSEGV|ABORT) .* $t\$" "$glog" || running+=("$t")
    done
    echo "--- guest, containerd $v: $what; the log's last lines ---"; tail -n 12 "$glog"
    grep -iE 'blocked for more than|hung_task|soft lockup|rcu.*stall' "$(dirname "$glog")/ps-$v.txt" 2>/dev/null | tail -n 5
    stuck=$(awk '$3 ~ /^D/ {printf "%s(%s) ", $6, $4}' "$(dirname "$glog")/ps-$v.txt" 2>/dev/null)
    summary+=("cgroup v2 lane, containerd $v: $what; running when stopped: ${running[*]:-none}; in D state: ${stuck:-none}")
}

# What a failed guest test printed (nextest's captured stdout/stderr after its FAIL line), its last 60 lines each:
# the guest's log stays on the CI machine, so CI's output is the only place a reader sees why a test failed there.
failure_output() { # log
    awk '/^ *(FAIL|TIMEOUT|SIGKILL|SIGSEGV|ABORT) \[/ && !seen[$NF]++ { grab = 1; n = 0; print; next }
         grab && (/^ *(PASS|FAIL|TIMEOUT|SIGTERM|SIGKILL|SIGSEGV|ABORT|SLOW|START) \[/ || /^────/ || /^ *Summary \[/) { grab = 0 }
         grab { buf[n++ % 60] = $0 }
         !grab && n { for (i = (n > 60 ? n - 60 : 0); i < n; i++) print buf[i % 60]; n = 0 }
         END { if (n) for (i = (n > 60 ? n - 60 : 0); i < n; i++) print buf[i % 60] }' "$1"
}

e2e_start=$(date +%s)
for v in $versions; do
    echo "=== e2e: containerd $v, runtime $runtime ==="
    log=$logdir/e2e-$v.log
    # Bounded: a broken runtime cannot eat CI's time (each test is also capped by tests/nextest.toml).
    # Docker 26 pairs with containerd 1.7 (tests/tests/docker.rs): the other versions' runs leave it out.
    # User-namespaced pods (tests/tests/userns.rs) need containerd 2.x, and run through our shim's own handler.
    filter='kind(test)'
    # Docker's userns-remap adds a system user: it runs in the throwaway guest only (tests/guest-tests.txt).
    filter="$filter and not test(docker_userns_remap_runs_containers_and_execs_in_the_mapped_ids)"
    [ "$v" = 1.7 ] || filter="$filter and not binary(docker)"
    case "$v" in 2*) ;; *) filter="$filter and not binary(userns)" ;; esac
    [ "$runtime" = io.containerd.predictive.v2 ] || filter="$filter and not binary(userns)"
    PREDICTIVE_E2E_CONTAINERD=$v timeout -k 30 "${PREDICTIVE_E2E_VERSION_TIMEOUT:-900}" \
        cargo nextest run --release -p predictive-e2e -E "$filter" \
        --config-file tests/nextest.toml 2>&1 | tee "$log"
    count "e2e containerd $v ($runtime)" "$log" "${PIPESTATUS[0]}"
done
e2e_secs=$(( $(date +%s) - e2e_start ))

lane_secs=0
if [ "$runtime" != io.containerd.predictive.v2 ]; then
    summary+=("cgroup v2 lane: not run for $runtime (it proves our shim on v2)")
elif [ "${PREDICTIVE_GUEST_LANE:-1}" = 0 ]; then
    echo "SKIPPED: cgroup v2 lane (PREDICTIVE_GUEST_LANE=0)"
    summary+=("cgroup v2 lane: SKIPPED (PREDICTIVE_GUEST_LANE=0)")
    if in_ci; then failed=$((failed + 1)); fi
else
    echo "=== cgroup v2 lane: Debian 13 guest, containerd ${PREDICTIVE_GUEST_VERSIONS:-1.7 2.1} ==="
    lane_start=$(date +%s)
    guest=$logdir/guest
    PREDICTIVE_TEST_LOGS=$logdir scripts/guest-lane.sh
    lane_secs=$(( $(date +%s) - lane_start ))
    if [ -s "$guest/setup-failed" ]; then
        failed=$((failed + 1)); summary+=("cgroup v2 lane: $(cat "$guest/setup-failed")")
    else
        for v in ${PREDICTIVE_GUEST_VERSIONS:-1.7 2.1}; do
            glog=$guest/e2e-$v.log
            if [ -s "$glog" ]; then
                echo "--- guest, containerd $v: failures ---"
                grep -E '^\s*(FAIL|TIMEOUT|SIGTERM|SIGKILL|SIGSEGV|ABORT) ' "$glog" | sort -u || true
                failure_output "$glog"
                count "cgroup v2 lane, containerd $v" "$glog" "$(cat "$guest/rc-$v" 2>/dev/null || echo 1)"
                grep -q 'Summary \[' "$glog" || unfinished "$v" "$glog"
                # A first run the guest stopped and ran again: on record, named in the summary.
                [ -s "$guest/e2e-$v.stopped.log" ] && unfinished "$v" "$guest/e2e-$v.stopped.log" "stopped, then run again"
            else
                failed=$((failed + 1)); summary+=("cgroup v2 lane, containerd $v: no results (see $guest/console.log)")
            fi
        done
        if [ -e "$guest/timed-out" ]; then
            failed=$((failed + 1)); summary+=("cgroup v2 lane: $(cat "$guest/timed-out")")
            echo "--- guest console, last lines ---"; tail -n 15 "$guest/console.log" 2>/dev/null
        fi
    fi
fi

echo
echo "=== summary ==="
for s in "${summary[@]}"; do echo "  $s"; done
echo "  e2e wall time: ${e2e_secs}s; cgroup v2 lane wall time: ${lane_secs}s"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ] && [ "$passed" -gt 0 ]
