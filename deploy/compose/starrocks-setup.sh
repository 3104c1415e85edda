#!/bin/bash
# FE settings for rockfeed's exactly-once mode, then rockfeed's tables.
set -euo pipefail
sql() { mysql -h starrocks -P 9030 -u root "$@"; }
# Room for every open transaction: shards × tables per instance, for every
# instance and every other loader of the database.
sql -e 'ADMIN SET FRONTEND CONFIG ("max_running_txn_num_per_db" = "1000")'
# Labels are remembered for 3 days: longer than any outage rockfeed must
# recover from without reloading twice.
sql -e 'ADMIN SET FRONTEND CONFIG ("label_keep_max_second" = "259200")'
# PREPARED transactions outlive a rockfeed restart (recovery commits them).
sql -e 'ADMIN SET FRONTEND CONFIG ("prepared_transaction_default_timeout_second" = "86400")'
sql < /shared/ddl.sql
sql -e 'SHOW TABLES FROM rockfeed'
