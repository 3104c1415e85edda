#!/usr/bin/env bash
# The README's test command. Installs what the tests need (quietly, only
# when missing), then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
[ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null 2>&1 || need+=(mosquitto)
command -v python3 >/dev/null 2>&1 || need+=(python3 python3-venv)
# The systemd unit is checked with systemd-analyze verify.
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# The vehicle-dims database tests start their own MariaDB server.
[ -x /usr/sbin/mariadbd ] || [ -x /usr/sbin/mysqld ] || need+=(mariadb-server)
# The alert rules are checked and unit-tested with promtool (Debian: prometheus).
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "tests/run.sh: installing ${need[*]}" >&2
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

# From PyPI, in a virtualenv inside the build directory: pyarrow reads the
# Parquet archive back as an independent reader; duckdb runs the views
# rockfeed ddl generates, as an independent SQL engine; moto's server is the
# S3-compatible store of the S3 archive tests; PyYAML reads the compose and
# Kubernetes files for their checks.
venv=target/pyenv
if ! "$venv/bin/python" -c 'import pyarrow, duckdb, moto.server, boto3, yaml' >/dev/null 2>&1; then
  echo "tests/run.sh: installing pyarrow, duckdb and moto into $venv" >&2
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install -q --disable-pip-version-check 'pyarrow>=20' 'duckdb>=1' 'moto[server]>=5' 'pyyaml>=6'
fi
export ROCKFEED_TEST_PYTHON="$PWD/$venv/bin/python"

exec cargo test --workspace --all-targets "$@"
