#!/usr/bin/env bash
# RSS while a multi-GB WAL backlog drains (DESIGN §7: ≤ 512 MiB).
#
# StarRocks (the emulator) answers "No backend alive." while loadgen pushes
# wide MQTT messages as fast as mosquitto takes them, until the WAL holds
# BACKLOG_GB; then the fault is cleared and rockfeed drains the backlog.
# rockfeed's RSS is sampled every 0.5 s throughout (rss.tsv), and the
# emulator's tables are audited against what was sent.
#
#   cargo build --release --workspace && benches/backlog-rss.sh [OUT]
#
# READINGS (default 75M) sets the backlog; PIPELINE_EXTRA adds lines to
# [pipeline] (e.g. PIPELINE_EXTRA='max_rows_per_load = 100000').
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/bench-backlog}
# Readings sent while StarRocks is away (wide, 1,000 metrics per message:
# ~30 WAL bytes per reading, so the default makes a ~2.2 GB backlog).
readings=${READINGS:-75000000}
bin=$PWD/target/release
rm -rf "$out" && mkdir -p "$out" && out=$(cd "$out" && pwd)
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
mq=$(port) fe=$(port) be=$(port) tm=$(port)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
cat >"$out/mosquitto.conf" <<CONF
listener $mq 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 0
max_inflight_messages 1000
max_queued_bytes 0
CONF
/usr/sbin/mosquitto -c "$out/mosquitto.conf" >"$out/mosquitto.log" 2>&1 & pids+=($!)
cat >"$out/rockfeed.toml" <<CONF
[starrocks]
endpoints = ["http://127.0.0.1:$fe"]
database = "rockfeed"
user = "root"
password = "backlog"
label_prefix = "backlog"
max_attempts = 0
[tables]
latest_metrics = ["speed", "soc", "odometer"]
buckets = 16
replication_num = 1
[pipeline]
shards = 2
epoch = "1s"
state_dir = "$out/state"
${PIPELINE_EXTRA:-}
[wal]
dir = "$out/wal"
max_bytes = $(( readings * 40 + (1 << 30) ))
[source.mqtt]
host = "127.0.0.1"
port = $mq
client_id = "rockfeed-backlog"
clean_session = false
topics = ["telemetry/#"]
qos = 1
[telemetry]
listen = "127.0.0.1:$tm"
[dead_letter]
dir = "$out/dead-letter"
CONF
"$bin/rockfeed" ddl --config "$out/rockfeed.toml" >"$out/ddl.sql"
ROCKFEED_EMULATOR_PASSWORD=backlog "$bin/rockfeed" starrocks-emulator --fe "127.0.0.1:$fe" --be "127.0.0.1:$be" \
  --ddl "$out/ddl.sql" >"$out/emulator.log" 2>&1 & pids+=($!)
sleep 1
"$bin/rockfeed" run --config "$out/rockfeed.toml" >"$out/rockfeed.log" 2>&1 & rf=$!; pids+=($rf)
until curl -sf "http://127.0.0.1:$tm/ready" >/dev/null; do sleep 0.2; done
curl -sf -u root:backlog -XPOST "http://127.0.0.1:$fe/_emulator/faults" -d '{"fault":"no_backend_alive","always":true}' >/dev/null
( while kill -0 $rf 2>/dev/null; do
    echo -e "$(date +%s.%N | cut -c1-14)\t$(awk '/VmRSS/{print $2}' /proc/$rf/status)\t$(du -sb "$out/wal" | cut -f1)"
    sleep 0.5
  done >"$out/rss.tsv" ) & pids+=($!)
"$bin/loadgen" run --mqtt "127.0.0.1:$mq" --vehicles 1000 --metrics 1000 --rate 0 --count "$readings" \
  --sent "$out/sent" --progress off >"$out/loadgen.log" 2>&1
# The last messages reach the WAL (the received count stops moving).
received() { curl -sf "http://127.0.0.1:$tm/metrics" | awk '$1=="rockfeed_mqtt_received_total"{print $2}'; }
last=-1; while [ "$(received)" != "$last" ]; do last=$(received); sleep 3; done
filled=$(date +%s)
echo "backlog: $(du -sh "$out/wal" | cut -f1) in the WAL; StarRocks back"
curl -sf -u root:backlog -XDELETE "http://127.0.0.1:$fe/_emulator/faults" >/dev/null
# Drained: every reading sent is committed in StarRocks.
metric() { curl -sf "http://127.0.0.1:$tm/metrics" | awk -v m="$1" '$1==m{print $2}'; }
until [ "$(metric rockfeed_readings_committed_total)" -ge "$readings" ]; do sleep 1; done
echo "drained in $(( $(date +%s) - filled )) s"
LOADGEN_STARROCKS_PASSWORD=backlog "$bin/loadgen" audit --sent "$out/sent" --emulator "http://127.0.0.1:$fe" | tee "$out/audit.txt"
awk -F'\t' -v f="$filled" '$1<f{a=($2>a?$2:a)} $1>=f{b=($2>b?$2:b)} END{printf "peak RSS filling %.0f MiB, draining %.0f MiB\n", a/1024, b/1024}' "$out/rss.tsv"
