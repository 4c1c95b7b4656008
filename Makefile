# predictive: a containerd shim v2 in Rust. The two commands for a fresh machine (root, Debian 12):
#   make demo    install what is missing, build, run a few containers through our shim
#   make test    install what is missing, build, run every test (unit + e2e on containerd 1.6, 1.7, 2.1 + the cgroup v2
#                lane: the same e2e tests that depend on the cgroup version in a Debian 13 guest, scripts/guest-lane.sh)
#
# Variables (environment or make VAR=...):
#   PREDICTIVE_E2E_RUNTIME    runtime the e2e suite drives (default io.containerd.predictive.v2;
#                             io.containerd.runc.v2 checks the suite itself against Debian's runc shim)
#   PREDICTIVE_E2E_VERSIONS   containerd versions for the e2e suite (default "1.6 1.7 2.1")
#   PREDICTIVE_E2E_CONTAINERD version for `make demo` / `make bench` / a single nextest run (default 1.6)
#   PREDICTIVE_E2E_CACHE      unpacked containerd 1.7/2.1 packages and the test image (default /var/cache/predictive-e2e)
#   PREDICTIVE_STATIC_SHIM    0 keeps cargo's dynamically linked shim instead of the static one (scripts/build-shim.sh)
#   PREFIX, DESTDIR           for `make install` / `make uninstall` (packaging/install.sh)

SHELL := /bin/bash
CARGO ?= cargo
PREFIX ?= /usr/local
SHIM := containerd-shim-predictive-v2
RELEASE := target/release

# Our cargo runs use the normal target/ dir, whatever a developer's shell exports.
unexport CARGO_TARGET_DIR

.PHONY: all deps build lint test test-runc e2e unit demo bench bench-density install uninstall deb clean-e2e

all: build

deps:
	scripts/deps.sh

# Every crate, then the shim again as a static non-PIE binary over cargo's (scripts/build-shim.sh says why;
# PREDICTIVE_STATIC_SHIM=0 keeps the dynamically linked one).
build: deps
	$(CARGO) build --release --workspace
	CARGO=$(CARGO) scripts/build-shim.sh

# rustfmt, clippy -D warnings and the shape checks: the first step of `make test`, seconds on a built tree.
lint:
	scripts/lint.sh

# Unit/root tests of every crate, then the e2e suite once per containerd version; prints "N passed, N failed".
test: deps build
	scripts/test.sh

# The e2e suite against Debian's runc v2 shim (checks the suite itself; no build of our shim needed).
test-runc: deps
	$(CARGO) build --release -p predictive-e2e
	PREDICTIVE_E2E_RUNTIME=io.containerd.runc.v2 scripts/test.sh

demo: deps build
	scripts/demo.sh

# End-to-end benchmarks: predictive-bench (start time, shim memory, idle CPU: ours vs runc v2 in the same run) and
# predictive-suite (a pipeline of real workloads under static, VPA-like and our limits; ~7 min, PREDICTIVE_SUITE_QUICK=1
# for ~3), then the crates' criterion benches.
bench: deps build
	$(RELEASE)/predictive-bench && $(RELEASE)/predictive-suite
	@if ls */benches/*.rs >/dev/null 2>&1; then $(CARGO) bench --workspace; \
	 else echo "bench: no criterion benches yet (crates add them under <crate>/benches/; this target runs them)"; fi

# Churn and density (issue 14; ~15 min, root): 500 containers run and deleted 8 at a time, then leak counts (cgroups
# in every hierarchy, mounts, processes, broker fds and connections, store size; exit 2 on a leak); 1,000 sleeping
# containers, then the broker's RSS, Register p99 and tick p99. PREDICTIVE_DENSITY_{CHURN,PARALLEL,SLEEPERS,HOLD_SECS}.
bench-density: deps build
	$(RELEASE)/predictive-density

# The shim, predictived and predictivectl in $(PREFIX)/bin, the systemd unit, /etc/predictive/predictived.toml and
# the containerd drop-in (configuration files are never overwritten). From the release binaries: `make build` first.
install:
	PREFIX=$(PREFIX) DESTDIR=$(DESTDIR) BINDIR=$(CURDIR)/$(RELEASE) packaging/install.sh

uninstall:
	PREFIX=$(PREFIX) DESTDIR=$(DESTDIR) packaging/install.sh --uninstall

# target/debian/predictive_<version>_<arch>.deb from the release binaries (cargo-deb, no rebuild).
deb: deps build
	$(CARGO) deb -p broker --no-build

# Remove cached containerd packages and the test image (they are fetched again when needed).
clean-e2e:
	rm -rf $${PREDICTIVE_E2E_CACHE:-/var/cache/predictive-e2e}
