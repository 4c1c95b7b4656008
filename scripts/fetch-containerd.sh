#!/usr/bin/env bash
# Fetch a containerd release from Debian's packages, without touching the system's apt sources,
# and unpack it into a cache dir. Prints the directory holding its binaries
# (containerd, ctr, containerd-shim-runc-v2).
#
#   scripts/fetch-containerd.sh 1.6|1.7|2.1     (1.6 = the system's Debian 12 package)
#
# Cache: $PREDICTIVE_E2E_CACHE/containerd-VERSION (default /var/cache/predictive-e2e). A second run is a no-op.
set -euo pipefail

ver=${1:?usage: fetch-containerd.sh 1.6|1.7|2.1}
case "$ver" in
    1.6) command -v containerd >/dev/null || { echo "containerd 1.6: run scripts/deps.sh first" >&2; exit 1; }
         dirname "$(command -v containerd)"; exit 0 ;;
    1.7) suite=trixie ;;
    2.1|2) suite=sid; ver=2.1 ;;
    *) echo "unknown containerd version $ver (1.6, 1.7, 2.1)" >&2; exit 2 ;;
esac

# The packages come through fetch-debs.sh (private apt configuration, bounded apt calls, cached).
dir=$("$(dirname "$0")/fetch-debs.sh" "containerd-$ver" "$suite" containerd)
if [ ! -x "$dir/usr/bin/containerd" ] || [ ! -x "$dir/usr/bin/ctr" ]; then
    echo "containerd $ver: $dir has no usr/bin/containerd and ctr" >&2; exit 1
fi
"$dir/usr/bin/containerd" --version >&2
echo "$dir/usr/bin"
