#!/usr/bin/env bash
# Install the Debian packages the build and the tests need, only what is missing.
# Idempotent: runs `apt-get update` at most once, and only when something must be installed.
set -euo pipefail

PKGS=(containerd runc busybox-static stress-ng libseccomp-dev pkg-config iproute2 procps
      util-linux ca-certificates gnupg debian-archive-keyring xz-utils zstd
      # the CRI test's client (tests/cri/cri.py) and the manifest test
      python3-grpcio python3-protobuf protobuf-compiler python3-yaml
      # the cgroup v2 lane: a Debian 13 guest under qemu (scripts/guest-image.sh, scripts/guest-lane.sh)
      qemu-system-x86 debootstrap
      # libcontainer's cgroup v2 device filter (BPF): libbpf-sys builds libbpf, which needs libelf and zlib
      libelf-dev zlib1g-dev
      # the network test (tests/tests/net.rs): CNI bridge + host-local IPAM give containers their own netns and veth
      containernetworking-plugins
      # the clock-step test (tests/tests/broker.rs): libfaketime steps the broker's wall clock alone
      faketime)

missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

if ((${#missing[@]})); then
    if [ "$(id -u)" != 0 ]; then
        echo "deps: missing ${missing[*]} and not root; install them first" >&2
        exit 1
    fi
    echo "deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=900 update -qq
    apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's containerd package enables and starts a host containerd on some setups; the tests
# never use it (each starts a private one), so leave it as it is.
if ! command -v cargo-nextest >/dev/null 2>&1 && ! cargo nextest --version >/dev/null 2>&1; then
    echo "deps: cargo-nextest missing; installing it with cargo" >&2
    cargo install --locked cargo-nextest
fi
# `make deb` and the packaging test build the .deb with cargo-deb (about 3 minutes to install on 2 cores).
if ! cargo deb --version >/dev/null 2>&1; then
    echo "deps: cargo-deb missing; installing it with cargo" >&2
    cargo install --locked cargo-deb
fi
echo "deps: ok"
