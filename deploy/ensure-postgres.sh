#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers on 127.0.0.1:5432 for the test suite, starting Debian's cluster
# if none runs, and creates the test database. Prints the URL the tests should use.
set -euo pipefail
db=${PSMA_TEST_PG_DB:-psma_node_test}
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)
  if [ -z "$version" ]; then echo "no PostgreSQL cluster installed" >&2; exit 1; fi
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || pg_ctlcluster "$version" main start
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
runas() { if [ "$(id -u)" = 0 ]; then su postgres -c "$1"; else sh -c "$1"; fi; }
if ! runas "psql -h 127.0.0.1 -tAc \"select 1 from pg_database where datname='$db'\"" 2>/dev/null | grep -q 1; then
  runas "psql -q -h 127.0.0.1 -c 'create database $db'" >/dev/null 2>&1 \
    || runas "psql -q -c 'create database $db'" >/dev/null
fi
echo "postgresql+psycopg2://postgres@127.0.0.1:5432/$db"
