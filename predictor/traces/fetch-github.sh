#!/bin/sh
# Obtains the per-task traces that public GitHub repositories vendor, pinned by repository and commit, checks them
# and converts them into the JSON-lines trace format of predictor::eval. Provenance and mapping:
# predictor/traces/README.md ("Per-task traces from GitHub").
#
#   predictor/traces/fetch-github.sh     # into $PREDICTIVE_TRACE_CACHE (default /var/cache/predictive-traces)
#
# Needs git access to github.com. A machine that reaches only package registries cannot clone: give it a copy of
# each repository instead (any clone or bare mirror holding the pinned commit) through
#   PREDICTIVE_BITBRAINS_GIT=/path/to/JessieRayeBauer/Time-Series-Forecasting-   (its .git or bare directory)
#   PREDICTIVE_GCD_GIT=/path/to/HiPro-IT/CPU-and-Memory-resource-usage-from-Google-Cluster-Data
# Writes <cache>/<name>.jsonl and appends each converted path to <cache>/READY (once). Nothing here is committed.
set -eu

CACHE="${PREDICTIVE_TRACE_CACHE:-/var/cache/predictive-traces}"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SRC="$CACHE/src"
mkdir -p "$SRC"

fail() { echo "fetch-github.sh: $*" >&2; exit 1; }

# gitdir REPO COMMIT GIVEN: a git directory that holds COMMIT of github.com/REPO (GIVEN if set, else a clone).
gitdir() {
    if [ -n "$3" ]; then
        dir="$3"
    else
        dir="$SRC/git/$(echo "$1" | tr / +)"
        if [ ! -d "$dir" ]; then
            git clone --quiet --bare "https://github.com/$1.git" "$dir" ||
                fail "cloning github.com/$1 failed (a registry-only machine cannot: see the header of this script)"
        fi
    fi
    git --git-dir="$dir" cat-file -e "$2^{commit}" 2>/dev/null ||
        git --git-dir="$dir/.git" cat-file -e "$2^{commit}" 2>/dev/null ||
        fail "$dir does not hold commit $2 of github.com/$1"
    if git --git-dir="$dir" cat-file -e "$2^{commit}" 2>/dev/null; then echo "$dir"; else echo "$dir/.git"; fi
}

cd "$ROOT"
cargo build --release -p predictor --example convert_pertask
CONVERT="$ROOT/target/release/examples/convert_pertask"
ready() { grep -qxF "$1" "$CACHE/READY" 2>/dev/null || echo "$1" >> "$CACHE/READY"; }

# --- Bitbrains GWA-T-12 Rnd (500 VMs, 3 months, 300 s samples), vendored by JessieRayeBauer/Time-Series-Forecasting-
BB_REPO=JessieRayeBauer/Time-Series-Forecasting-
BB_COMMIT=0901a0da3024507c7732c782621e590077abca64
BB_TREE=698d3fb2ddf89ea16218ee4c4dbe3c031c6d1347    # git tree of rnd/ at that commit
BB_MANIFEST_SHA=361e4f1762890e29442feb6dc8376e7be46d8169553d4926a978853459b4fd09
BB_DIR="$SRC/bitbrains-rnd"
if [ ! -f "$BB_DIR/MANIFEST.sha256" ]; then
    git_bb=$(gitdir "$BB_REPO" "$BB_COMMIT" "${PREDICTIVE_BITBRAINS_GIT:-}")
    tree=$(git --git-dir="$git_bb" rev-parse "$BB_COMMIT:rnd")
    [ "$tree" = "$BB_TREE" ] || fail "$BB_REPO@$BB_COMMIT:rnd is tree $tree, pinned $BB_TREE"
    rm -rf "$BB_DIR" && mkdir -p "$BB_DIR"
    git --git-dir="$git_bb" archive --format=tar --prefix=rnd/ "$BB_COMMIT:rnd" | tar -x -C "$BB_DIR"
    # sha256 of every CSV, sorted by path: one hash pins all 1,500 files.
    (cd "$BB_DIR" && find rnd -name '*.csv' | LC_ALL=C sort | xargs sha256sum > MANIFEST.sha256)
fi
got=$(sha256sum "$BB_DIR/MANIFEST.sha256" | cut -d' ' -f1)
[ "$got" = "$BB_MANIFEST_SHA" ] || fail "$BB_DIR/MANIFEST.sha256: sha256 $got, pinned $BB_MANIFEST_SHA"
"$CONVERT" --trace bitbrains_rnd --dir "$BB_DIR/rnd" --out "$CACHE/bitbrains_rnd-vm-daily.jsonl"
ready "$CACHE/bitbrains_rnd-vm-daily.jsonl"

# --- Google clusterdata-2011, per-job daily series extracted by Nguyen Trung Hieu et al. (IEEE TSC), -------------
# --- published by HiPro-IT/CPU-and-Memory-resource-usage-from-Google-Cluster-Data ------------------------------
GCD_REPO=HiPro-IT/CPU-and-Memory-resource-usage-from-Google-Cluster-Data
GCD_COMMIT=327b8ce301d43fd09e0a6b63279edca0728d1af8
GCD_TAR_SHA=3df5170967bd936b7d29d0d7e3b2459911dfde93e9dd1ac694f0ac7355090f73
GCD_DIR="$SRC/google2011-jobs"
if [ ! -f "$GCD_DIR/GCD_VMs.tar.gz" ]; then
    git_gcd=$(gitdir "$GCD_REPO" "$GCD_COMMIT" "${PREDICTIVE_GCD_GIT:-}")
    mkdir -p "$GCD_DIR"
    git --git-dir="$git_gcd" show "$GCD_COMMIT:GCD_VMs.tar.gz" > "$GCD_DIR/GCD_VMs.tar.gz.partial"
    mv "$GCD_DIR/GCD_VMs.tar.gz.partial" "$GCD_DIR/GCD_VMs.tar.gz"
fi
got=$(sha256sum "$GCD_DIR/GCD_VMs.tar.gz" | cut -d' ' -f1)
[ "$got" = "$GCD_TAR_SHA" ] || fail "$GCD_DIR/GCD_VMs.tar.gz: sha256 $got, pinned $GCD_TAR_SHA"
rm -rf "$GCD_DIR/GCD_VMs" && tar -xzf "$GCD_DIR/GCD_VMs.tar.gz" -C "$GCD_DIR"
"$CONVERT" --trace google2011_jobs --dir "$GCD_DIR/GCD_VMs" --out "$CACHE/google2011_jobs-daily.jsonl"
ready "$CACHE/google2011_jobs-daily.jsonl"

echo "fetch-github.sh: converted traces listed in $CACHE/READY"
