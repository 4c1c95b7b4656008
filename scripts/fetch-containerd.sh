#!/usr/bin/env bash
# Fetch a containerd release from Debian's packages, without touching the system's apt sources,
# and unpack it into a cache dir. Prints the directory holding its binaries
# (containerd, ctr, containerd-shim-runc-v2).
#
#   scripts/fetch-containerd.sh 1.6|1.7|2.1     (1.6 = the system's Debian 12 package)
#
# Cache: $PREDICTIVE_E2E_CACHE (default /var/cache/predictive-e2e). A second run is a no-op.
set -euo pipefail

ver=${1:?usage: fetch-containerd.sh 1.6|1.7|2.1}
case "$ver" in
    1.6) command -v containerd >/dev/null || { echo "containerd 1.6: run scripts/deps.sh first" >&2; exit 1; }
         dirname "$(command -v containerd)"; exit 0 ;;
    1.7) suite=trixie ;;
    2.1|2) suite=sid; ver=2.1 ;;
    *) echo "unknown containerd version $ver (1.6, 1.7, 2.1)" >&2; exit 2 ;;
esac

cache=${PREDICTIVE_E2E_CACHE:-/var/cache/predictive-e2e}
dest=$cache/containerd-$ver
mkdir -p "$cache"
exec 9>"$cache/.lock-$ver"
flock -w 900 9

if [ -x "$dest/usr/bin/containerd" ] && [ -x "$dest/usr/bin/ctr" ] && [ -f "$dest/.complete" ]; then
    echo "$dest/usr/bin"; exit 0
fi

A=$cache/apt-$suite
mkdir -p "$A/etc" "$A/lists/partial" "$A/cache/archives/partial" "$A/debs"
uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$uri" ] || uri=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$uri" ] || uri=http://deb.debian.org/debian
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri $suite main" > "$A/etc/sources.list"
O=(-o Dir::Etc::SourceList="$A/etc/sources.list" -o Dir::Etc::SourceParts=/dev/null
   -o Dir::State::Lists="$A/lists" -o Dir::Cache="$A/cache" -o Dir::State::status=/var/lib/dpkg/status
   -o Debug::NoLocking=1 -o APT::Sandbox::User=root -o APT::Get::List-Cleanup=0)
echo "fetching containerd $ver from Debian $suite ..." >&2
apt-get "${O[@]}" -qq update >&2
rm -rf "$A/debs"/*.deb
(cd "$A/debs" && apt-get "${O[@]}" -qq download containerd >&2)
rm -rf "$dest.tmp"; mkdir -p "$dest.tmp"
for f in "$A/debs"/*.deb; do dpkg-deb -x "$f" "$dest.tmp"; done
"$dest.tmp/usr/bin/containerd" --version >&2
rm -rf "$dest"; mv "$dest.tmp" "$dest"
touch "$dest/.complete"
echo "$dest/usr/bin"
