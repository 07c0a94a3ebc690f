#!/usr/bin/env bash
# Makes sure the database servers and clients the backup tests (tests/backup/) and the runner benchmark need are
# installed: PostgreSQL 15 (initdb, postgres, pg_dump, pg_restore, psql, pgbench) and MariaDB (mariadbd,
# mariadb-install-db, mariadb, mariadb-dump). Debian bookworm ships exactly PostgreSQL 15 and MariaDB 10.11.
# Installing the server packages starts no service the tests rely on: the fixtures run their own servers in
# temporary folders on 127.0.0.1. Progress goes to stderr.
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"

apt_install postgresql-15 postgresql-client-15 postgresql-contrib mariadb-server mariadb-client

missing=()
for tool in /usr/lib/postgresql/15/bin/initdb /usr/lib/postgresql/15/bin/postgres pg_dump pg_restore pg_dumpall \
  psql pgbench mariadbd mariadb-install-db mariadb mariadb-dump; do
  command -v "$tool" >/dev/null || [ -x "$tool" ] || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "databases: still missing after install: ${missing[*]}" >&2
  exit 1
fi
