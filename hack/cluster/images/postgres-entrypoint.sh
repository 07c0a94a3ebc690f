#!/usr/bin/env bash
# The official postgres image's entrypoint, for what our manifests use, as the non-root uid 999:
#   POSTGRES_PASSWORD (required), POSTGRES_USER (default postgres), POSTGRES_DB (default: the user),
#   PGDATA (default /var/lib/postgresql/data), POSTGRES_INITDB_ARGS, /docker-entrypoint-initdb.d/*.sql|*.sql.gz|*.sh.
# On an empty PGDATA: initdb, a temporary server on the Unix socket only (a TCP probe must not pass before the real
# server is up), the database and the init scripts; then the real server replaces this script as PID 1.
set -Eeuo pipefail

# Arguments that start with "-" are the server's.
if [ "${1:0:1}" = - ]; then set -- postgres "$@"; fi

if [ "$1" = postgres ]; then
  export PGDATA=${PGDATA:-/var/lib/postgresql/data}
  POSTGRES_USER=${POSTGRES_USER:-postgres}
  POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}

  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
      echo "error: the database is not initialised and POSTGRES_PASSWORD is not set" >&2
      exit 1
    fi
    mkdir -p "$PGDATA"
    # The server refuses a data directory that others may read; under fsGroup the volume's folders are group-rwx.
    chmod 0700 "$PGDATA"

    # The password goes through a file (a pipe), never the command line that `ps` shows. Local socket connections
    # are trusted, as in the official image; every TCP connection needs the password.
    # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of words, as in the official image
    initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
      --auth-local=trust --auth-host=scram-sha-256 ${POSTGRES_INITDB_ARGS:-}
    printf '\n# Every address, with a password (the image).\nhost all all all scram-sha-256\n' >> "$PGDATA/pg_hba.conf"

    pg_ctl --pgdata="$PGDATA" --wait --options="-c listen_addresses=''" start
    sql() { psql -v ON_ERROR_STOP=1 --no-psqlrc --no-password --username="$POSTGRES_USER" "$@"; }
    if [ "$POSTGRES_DB" != postgres ]; then
      sql --dbname=postgres --set=db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
    fi
    shopt -s nullglob
    for file in /docker-entrypoint-initdb.d/*; do
      case $file in
        *.sh)
          echo "entrypoint: running $file" >&2
          # Executable scripts run on their own; the others are sourced, as in the official image.
          if [ -x "$file" ]; then "$file"; else
            # shellcheck disable=SC1090
            . "$file"
          fi
          ;;
        *.sql) echo "entrypoint: running $file" >&2; sql --dbname="$POSTGRES_DB" -f "$file" ;;
        *.sql.gz) echo "entrypoint: running $file" >&2; gunzip -c "$file" | sql --dbname="$POSTGRES_DB" ;;
        *) echo "entrypoint: ignoring $file" >&2 ;;
      esac
    done
    shopt -u nullglob
    pg_ctl --pgdata="$PGDATA" --wait --mode=fast stop
    echo "entrypoint: initialisation complete, starting the server" >&2
  fi
fi

exec "$@"
