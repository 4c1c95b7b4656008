#!/usr/bin/env bash
# Download Debian packages from another suite with a private apt configuration (the system's apt
# sources are never touched) and unpack them with `dpkg-deb -x` into a cache dir. Prints that dir.
#
#   scripts/fetch-debs.sh NAME SUITE PKG...
#     scripts/fetch-debs.sh docker-26 trixie docker.io docker-cli          (Docker 26 for the docker test)
#     scripts/fetch-debs.sh cri-api trixie golang-github-kubernetes-cri-api-dev   (CRI v1 api.proto)
#
# Cache: $PREDICTIVE_E2E_CACHE/NAME (default /var/cache/predictive-e2e); a second run is a no-op.
# fetch-containerd.sh uses it for containerd 1.7/2.1. Apt lists are cached per suite in $PREDICTIVE_E2E_CACHE/apt-SUITE.
# Every apt call is bounded.
set -euo pipefail

name=${1:?usage: fetch-debs.sh NAME SUITE PKG...}
suite=${2:?usage: fetch-debs.sh NAME SUITE PKG...}
shift 2
(($#)) || { echo "usage: fetch-debs.sh NAME SUITE PKG..." >&2; exit 2; }

cache=${PREDICTIVE_E2E_CACHE:-/var/cache/predictive-e2e}
dest=$cache/$name
mkdir -p "$cache"
exec 9>"$cache/.lock-$name"
flock -w 600 9
if [ -f "$dest/.complete" ]; then echo "$dest"; exit 0; fi

A=$cache/apt-$suite
mkdir -p "$A/etc" "$A/lists/partial" "$A/cache/archives/partial"
exec 8>"$A/.lock"
flock -w 600 8
uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$uri" ] || uri=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$uri" ] || uri=http://deb.debian.org/debian
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri $suite main" > "$A/etc/sources.list"
O=(-o Dir::Etc::SourceList="$A/etc/sources.list" -o Dir::Etc::SourceParts=/dev/null
   -o Dir::State::Lists="$A/lists" -o Dir::Cache="$A/cache" -o Dir::State::status=/var/lib/dpkg/status
   -o Debug::NoLocking=1 -o APT::Sandbox::User=root -o APT::Get::List-Cleanup=0
   -o Acquire::http::Timeout=60 -o Acquire::Retries=2)
debs=$A/debs-$name
rm -rf "$debs"; mkdir -p "$debs"
# Lists fetched by fetch-containerd.sh (or an earlier run) are reused while they are less than a day old.
if [ -z "$(find "$A/lists" -maxdepth 1 -name '*_Packages*' -mmin -1440 2>/dev/null | head -n1)" ]; then
    echo "fetch-debs: apt-get update ($suite) ..." >&2
    timeout 600 apt-get "${O[@]}" -qq update >&2
fi
echo "fetch-debs: downloading $* from Debian $suite ..." >&2
start=$(date +%s)
if ! (cd "$debs" && timeout 600 apt-get "${O[@]}" -qq download "$@" >&2); then
    # Stale lists (a package moved to a new version since): refresh once and retry.
    timeout 600 apt-get "${O[@]}" -qq update >&2
    (cd "$debs" && timeout 600 apt-get "${O[@]}" -qq download "$@" >&2)
fi
echo "fetch-debs: $(du -sch "$debs"/*.deb | tail -n1 | cut -f1) in $(( $(date +%s) - start ))s: $(cd "$debs" && ls *.deb | tr '\n' ' ')" >&2
rm -rf "$dest.tmp"; mkdir -p "$dest.tmp"
for f in "$debs"/*.deb; do dpkg-deb -x "$f" "$dest.tmp"; done
rm -rf "$debs" "$dest"; mv "$dest.tmp" "$dest"
touch "$dest/.complete"
echo "$dest"
