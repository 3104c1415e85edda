#!/usr/bin/env bash
# The end-to-end benchmark: mosquitto, the StarRocks emulator and rockfeed on
# this machine, loadgen driving a ladder of rates, the broker's ceiling
# measured with a no-op consumer in the same run. Installs mosquitto when
# missing, builds the release binaries once, then runs `loadgen bench`
# (arguments pass through: --rates, --seconds, --profile, --vehicles, …).
# Results: target/bench-e2e/bench.md, bench.json, per-step reports.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! [ -x /usr/sbin/mosquitto ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "benches/e2e.sh: installing mosquitto" >&2
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq mosquitto >/dev/null
fi
cargo build --release --workspace
exec target/release/loadgen bench --out target/bench-e2e "$@"
