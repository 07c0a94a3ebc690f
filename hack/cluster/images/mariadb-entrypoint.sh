#!/usr/bin/env bash
# The official mariadb image's entrypoint, for what our manifests use, as the non-root uid 999:
#   MARIADB_ROOT_PASSWORD (required), MARIADB_DATABASE, MARIADB_USER and MARIADB_PASSWORD (optional),
#   arguments that start with "-" for mariadbd (e.g. --datadir=...), /docker-entrypoint-initdb.d/*.sql|*.sql.gz|*.sh.
# On a datadir without a `mysql` database: mariadb-install-db, a temporary server on the socket only (a TCP probe
# must not pass before the real server is up), the users, the database and the init scripts; then the real server
# replaces this script as PID 1.
set -Eeuo pipefail

if [ "${1:0:1}" = - ]; then set -- mariadbd "$@"; fi

# setting NAME SERVER-ARGV...: a server setting as mariadbd itself resolves it, from its config files and arguments:
# the table of values at the end of --help, whose lines start in the first column (the descriptions are indented
# and may wrap onto a word like "socket"). awk reads to the end: an early exit would kill mariadbd with SIGPIPE,
# which pipefail turns into a failure.
setting() {
  local name=$1
  shift
  "$@" --verbose --help 2>/dev/null | awk -v name="$name" '/^[^ \t]/ && $1 == name && !found { print $2; found = 1 }'
}
# quoted VALUE: VALUE as the inside of a single-quoted SQL string.
quoted() {
  local value=${1//\\/\\\\}
  printf '%s' "${value//\'/\\\'}"
}
# identifier VALUE: VALUE as the inside of a backquoted SQL name.
identifier() { printf '%s' "${1//\`/\`\`}"; }

if [ "$1" = mariadbd ] || [ "$1" = mysqld ]; then
  datadir=$(setting datadir "$@")
  socket=$(setting socket "$@")
  if [ -z "$datadir" ] || [ -z "$socket" ]; then
    echo "error: could not read datadir and socket from: $* --verbose --help" >&2
    exit 1
  fi
  if [ ! -d "$datadir/mysql" ]; then
    if [ -z "${MARIADB_ROOT_PASSWORD:-}" ]; then
      echo "error: the database is not initialised and MARIADB_ROOT_PASSWORD is not set" >&2
      exit 1
    fi
    if [ -n "${MARIADB_USER:-}" ] && [ -z "${MARIADB_PASSWORD:-}" ]; then
      echo "error: MARIADB_USER is set but MARIADB_PASSWORD is not" >&2
      exit 1
    fi
    mkdir -p "$datadir"
    # normal: root gets a password below, not Debian's unix_socket-only login.
    mariadb-install-db "${@:2}" --datadir="$datadir" --auth-root-authentication-method=normal \
      --skip-test-db --skip-name-resolve --skip-log-bin >&2

    "$@" --skip-networking --socket="$socket" --skip-log-bin &
    pid=$!
    # Until the passwords are set at the end, root logs in over the socket without one (and only over the socket).
    sql() { mariadb --no-defaults --protocol=socket --socket="$socket" --user=root "$@"; }
    for _ in $(seq 60); do
      if sql --execute='SELECT 1' >/dev/null 2>&1; then break; fi
      if ! kill -0 "$pid" 2>/dev/null; then echo "error: the temporary server stopped" >&2; exit 1; fi
      sleep 1
    done
    sql --execute='SELECT 1' >/dev/null

    # Through stdin, so no password shows on a command line. The users that mariadb-install-db makes for the
    # loopback addresses and the host name would shadow root@'%' without a password.
    {
      echo "SET @@SESSION.SQL_LOG_BIN=0;"
      echo "SET @@SESSION.SQL_MODE=REPLACE(@@SESSION.SQL_MODE, 'NO_BACKSLASH_ESCAPES', '');"
      echo "DROP USER IF EXISTS root@'127.0.0.1', root@'::1';"
      # shellcheck disable=SC2028 # the backslashes are SQL's, for the server to read
      echo "EXECUTE IMMEDIATE CONCAT('DROP USER IF EXISTS root@\'', @@hostname, '\'');"
      if [ -n "${MARIADB_DATABASE:-}" ]; then
        echo "CREATE DATABASE IF NOT EXISTS \`$(identifier "$MARIADB_DATABASE")\`;"
      fi
      if [ -n "${MARIADB_USER:-}" ]; then
        echo "CREATE USER '$(quoted "$MARIADB_USER")'@'%' IDENTIFIED BY '$(quoted "$MARIADB_PASSWORD")';"
        if [ -n "${MARIADB_DATABASE:-}" ]; then
          echo "GRANT ALL ON \`$(identifier "$MARIADB_DATABASE")\`.* TO '$(quoted "$MARIADB_USER")'@'%';"
        fi
      fi
    } | sql --database=mysql
    database=${MARIADB_DATABASE:-}

    shopt -s nullglob
    for file in /docker-entrypoint-initdb.d/*; do
      case $file in
        *.sh)
          echo "entrypoint: running $file" >&2
          if [ -x "$file" ]; then "$file"; else
            # shellcheck disable=SC1090
            . "$file"
          fi
          ;;
        *.sql) echo "entrypoint: running $file" >&2; sql ${database:+--database="$database"} < "$file" ;;
        *.sql.gz) echo "entrypoint: running $file" >&2; gunzip -c "$file" | sql ${database:+--database="$database"} ;;
        *) echo "entrypoint: ignoring $file" >&2 ;;
      esac
    done
    shopt -u nullglob

    password=$(quoted "$MARIADB_ROOT_PASSWORD")
    sql --database=mysql <<SQL
SET @@SESSION.SQL_LOG_BIN=0;
SET @@SESSION.SQL_MODE=REPLACE(@@SESSION.SQL_MODE, 'NO_BACKSLASH_ESCAPES', '');
CREATE USER 'root'@'%' IDENTIFIED BY '$password';
GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;
GRANT PROXY ON ''@'%' TO 'root'@'%' WITH GRANT OPTION;
ALTER USER 'root'@'localhost' IDENTIFIED BY '$password';
SQL

    # SIGTERM is mariadbd's clean shutdown.
    kill "$pid"
    wait "$pid"
    echo "entrypoint: initialisation complete, starting the server" >&2
  fi
fi

exec "$@"
