#!/usr/bin/env bash
# The guard rails, the first step of `make test` and `make lint` on its own (seconds on a built tree; run it before
# every commit): `cargo fmt --all --check`, `cargo clippy --workspace --all-targets --release -- -D warnings` and the
# shape checks (scripts/fn-length.py: no production function over 120 lines; scripts/module-cycles.py: no cycle
# between one crate's top-level modules). Exit 0 when all are clean.
set -uo pipefail
cd "$(dirname "$0")/.."

rc=0
cargo fmt --all --check || rc=1
cargo clippy --workspace --all-targets --release -- -D warnings || rc=1
python3 scripts/fn-length.py api/src shim/src runtime-hooks/src predictor/src broker/src ctl/src testkit/src || rc=1
for crate in api broker ctl predictor shim runtime-hooks testkit tests; do
    echo "--- module cycles: $crate/src"
    python3 scripts/module-cycles.py "$crate/src" || rc=1
done
[ "$rc" = 0 ] && echo "lint: clean" || echo "lint: FAILED (see above)"
exit $rc
