#!/bin/sh
# 60 s of traffic from 200 vehicles into mosquitto, then the audit against
# StarRocks itself (its MySQL port): every (vehicle, window, metric) and the
# latest table must match what was sent.
set -eu
loadgen run --mqtt mosquitto:1883 --vehicles 200 --metrics 50 --rate 5000 --duration 60 --sent /shared/sent.jsonl
# An epoch (up to pipeline.max_epoch) for the last readings to commit.
sleep 45
loadgen audit --sent /shared/sent.jsonl --mysql starrocks:9030 --db rockfeed
