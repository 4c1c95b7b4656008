#!/usr/bin/env bash
# `make build`'s second step: the shim as a static, non-PIE executable, installed over cargo's
# target/release/containerd-shim-predictive-v2 (a new file, so cargo's own copy under deps/ is untouched).
#
# Why: one shim process runs per container (or pod). A static non-PIE binary has no dynamic loader, no
# shared libraries to map and no relocations to apply: it execs in ~1.5 ms instead of ~3.8 ms (containerd
# execs it twice per container) and its resident memory drops by ~2 MB (docs/BENCHMARKS.md, "Shim").
# Cargo cannot set rustflags for one binary of a workspace, so this is a separate build of the shim alone,
# for the host target given explicitly (--target keeps the flags off build scripts and proc-macros), in
# target/<host triple>/release. glibc's static libc.a (libc6-dev) and libseccomp.a (libseccomp-dev) are
# what it links; scripts/deps.sh installs both.
#
# PREDICTIVE_STATIC_SHIM=0 keeps cargo's ordinary (dynamically linked, PIE) shim.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo=${CARGO:-cargo}
out=target/release/containerd-shim-predictive-v2

if [ "${PREDICTIVE_STATIC_SHIM:-1}" = 0 ]; then
    echo "build-shim: PREDICTIVE_STATIC_SHIM=0: keeping cargo's dynamically linked $out"
    exit 0
fi
host=$(rustc -vV | sed -n 's/^host: //p')
multiarch=$(gcc -print-multiarch 2>/dev/null || true)
libdir=/usr/lib/${multiarch:-x86_64-linux-gnu}
if [ ! -f "$libdir/libseccomp.a" ]; then
    echo "build-shim: $libdir/libseccomp.a is missing (install libseccomp-dev, or set PREDICTIVE_STATIC_SHIM=0)" >&2
    exit 1
fi

RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" \
LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH="$libdir" \
    "$cargo" build --release -p predictive-shim --bin containerd-shim-predictive-v2 --target "$host"

built=target/$host/release/containerd-shim-predictive-v2
# No program interpreter: nothing is loaded at exec but the binary itself.
if readelf -l "$built" | grep -q 'Requesting program interpreter'; then
    echo "build-shim: $built still asks for a dynamic loader; not installing it" >&2
    exit 1
fi
install -m 0755 "$built" "$out"
echo "build-shim: $out is static ($(stat -c %s "$out") bytes)"
