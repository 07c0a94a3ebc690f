# syntax=docker/dockerfile:1
# One image for every part of the operator: `dbb-webhook`, `dbb-reconciler`, and `dbb-backup` (the runner inside
# each backup Job, with the PostgreSQL and MariaDB client tools). There is no ENTRYPOINT: a Pod names the command
# as the first of its `args` (see deploy/), so the program runs as PID 1 and receives SIGTERM itself.
#
#   docker build -t registry.example/databasebackup-operator:0.1.0 .
#
# Without a registry (hack/cluster/images.sh): --build-arg PYTHON_IMAGE=<a local image with python3 and venv>
# --build-arg PG_CLIENT_SOURCE=debian.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: the package and its dependencies, in a venv that the final stage copies whole ----------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
# Only what `pip install .` reads: pyproject.toml names README.md as the readme, and these six packages (plugin is
# `kubectl dbb`, a user's command: copied so that the console script pip installs for it works, not for the Pods).
COPY pyproject.toml README.md ./
COPY common/ common/
COPY webhook/ webhook/
COPY reconciler/ reconciler/
COPY runner/ runner/
COPY certs/ certs/
COPY plugin/ plugin/
# A non-editable install: the venv holds the code and the console scripts, /src is not needed afterwards.
RUN /opt/venv/bin/pip install .

# --- final: Python, the venv, and the database clients the runner calls ----------------------------------------
FROM ${PYTHON_IMAGE}

# pg_dump refuses to dump a server of a newer major version than its own (the runner fails such a run at once with
# reason ClientTooOld), and Debian bookworm ships only PostgreSQL 15's clients. So by default the clients come from
# the PostgreSQL project's own apt repository (PGDG), for the base image's own Debian suite, at the newest major
# version it ships (`newest`, resolved at build time): a pg_dump dumps every server from 9.2 up to its own version,
# so the image backs up every released PostgreSQL. Pin a number (17) for a reproducible build.
ARG PG_CLIENT_MAJOR=newest
# Where postgresql-client-${PG_CLIENT_MAJOR} comes from: `pgdg`, or `debian` for the base image's own suite when it
# ships that major (trixie has 17) or PGDG cannot be reached; `debian` needs no curl, gnupg or key.
ARG PG_CLIENT_SOURCE=pgdg
# The fingerprint of the PGDG signing key (ACCC4CF8), checked before apt trusts the downloaded key.
ARG PGDG_KEY_FINGERPRINT=B97B0AFCAA1A47F044F244A07FCC7D46ACCC4CF8

# mariadb-client (10.11 in bookworm, 11.8 in trixie) provides `mariadb` and `mariadb-dump`, which also back up
# MySQL servers.
RUN set -eux; \
    apt-get update; \
    case "${PG_CLIENT_SOURCE}" in \
        pgdg) \
            apt-get install -y --no-install-recommends ca-certificates curl gnupg; \
            curl -fsSL https://www.postgresql.org/media/keys/ACCC4CF8.asc -o /usr/share/keyrings/pgdg.asc; \
            GNUPGHOME="$(mktemp -d)" gpg --batch --show-keys --with-colons /usr/share/keyrings/pgdg.asc \
                | grep -q "^fpr:::::::::${PGDG_KEY_FINGERPRINT}:$"; \
            codename="$(. /etc/os-release && echo "$VERSION_CODENAME")"; \
            echo "deb [signed-by=/usr/share/keyrings/pgdg.asc] https://apt.postgresql.org/pub/repos/apt ${codename}-pgdg main" \
                > /etc/apt/sources.list.d/pgdg.list; \
            apt-get update ;; \
        debian) \
            apt-get install -y --no-install-recommends ca-certificates ;; \
        *) \
            echo "PG_CLIENT_SOURCE must be pgdg or debian, not ${PG_CLIENT_SOURCE}" >&2; exit 1 ;; \
    esac; \
    major="${PG_CLIENT_MAJOR}"; \
    if [ "${major}" = newest ]; then \
        major="$(apt-cache search --names-only '^postgresql-client-[0-9]+$' \
            | sed -n 's/^postgresql-client-\([0-9][0-9]*\) .*/\1/p' | sort -n | tail -n 1)"; \
    fi; \
    case "${major}" in ''|*[!0-9]*) echo "PG_CLIENT_MAJOR: no postgresql-client-N for '${PG_CLIENT_MAJOR}'" >&2; exit 1 ;; esac; \
    apt-get install -y --no-install-recommends "postgresql-client-${major}" mariadb-client; \
    ln -s "/usr/lib/postgresql/${major}" /usr/lib/postgresql/current; \
    if [ "${PG_CLIENT_SOURCE}" = pgdg ]; then apt-get purge -y --auto-remove curl gnupg; fi; \
    rm -rf /var/lib/apt/lists/* /root/.gnupg

# 65532: the unprivileged user of distroless images, the one the backup Jobs and the Deployments run as
# (runAsUser). The home exists but the root filesystem is read-only in every Pod we create; nothing writes there.
RUN groupadd --gid 65532 nonroot \
    && useradd --uid 65532 --gid 65532 --home-dir /home/nonroot --create-home --shell /usr/sbin/nologin nonroot

COPY --from=build /opt/venv /opt/venv

# The versioned client directory first (`current` links to the major installed): the exact binaries, not Debian's
# pg_wrapper (a Perl script that picks a version per cluster and reads ~/.postgresqlrc).
ENV PATH="/opt/venv/bin:/usr/lib/postgresql/current/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# Fail the build, not the first backup, if an entry point or a tool the runner calls is missing: verify.queries load
# the system libpq through psycopg's pure-Python build, and MySQL restores run the mariadb client with --sandbox.
RUN set -eux; \
    for command in dbb-webhook dbb-reconciler dbb-backup dbb-certs kubectl-dbb; do "$command" --help > /dev/null; done; \
    for tool in pg_dump pg_dumpall pg_restore psql mariadb-dump mariadb; do "$tool" --version; done; \
    PSYCOPG_IMPL=python python -c "import psycopg; print('psycopg', psycopg.__version__, 'libpq', psycopg.pq.version())"; \
    mariadb --sandbox --help > /dev/null

USER 65532:65532
WORKDIR /home/nonroot

LABEL org.opencontainers.image.title="databasebackup-operator" \
      org.opencontainers.image.description="DatabaseBackup operator: admission webhook, reconciler and backup runner" \
      org.opencontainers.image.licenses="Apache-2.0"

CMD ["dbb-reconciler", "--help"]
