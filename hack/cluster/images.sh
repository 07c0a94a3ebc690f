#!/usr/bin/env bash
# Builds every container image the local cluster runs, without any registry: Debian bases from debootstrap, the
# databases from Debian's packages, the cluster's own binaries and SeaweedFS (hack/seaweedfs.sh) FROM scratch, and the
# operator from the project's Dockerfile. Usage:
#   bash hack/cluster/images.sh BIN_DIR     (BIN_DIR holds the static binaries pause, coredns, local-path-provisioner)
# prints one line per image to stdout, `<image reference> <docker-archive tar>`, for `ctr images import`.
# Progress goes to stderr.
#
# Each archive is cached under ~/.cache/dbb-cluster/images/, named after a hash of everything it is built from:
# its Containerfile and scripts, its base image's hash, the Debian suite and mirror, the binary, and for the
# operator the files its Dockerfile copies. A run with nothing changed only hashes; a change to the Python code
# rebuilds only the operator image. Containers storage is a scratch area: the images this run puts there are
# removed when it ends, only the archives stay.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=hack/lib.sh
source "$here/../lib.sh"

if [ $# -ne 1 ] || [ ! -d "$1" ]; then
  echo "usage: $0 BIN_DIR (a folder with the pause, coredns and local-path-provisioner binaries)" >&2
  exit 2
fi
bin_dir=$(cd "$1" && pwd)
for binary in pause coredns local-path-provisioner; do
  if [ ! -x "$bin_dir/$binary" ]; then echo "images: no executable $bin_dir/$binary" >&2; exit 1; fi
done
# debootstrap chroots and rootful containers storage both need it.
if [ "$(id -u)" -ne 0 ]; then echo "images: run as root" >&2; exit 1; fi

images=$here/images
cache=${XDG_CACHE_HOME:-$HOME/.cache}/dbb-cluster/images
mkdir -p "$cache/logs"
# Two runs at once would build the same images and share containers storage tags: the second waits, then finds
# everything cached.
exec 9>"$cache/.lock"
flock 9

apt_install buildah skopeo debootstrap debian-archive-keyring runc  # buildah only recommends a runtime

# The mirror comes from this machine's own apt sources, through apt's own parser (one-line and deb822 files alike):
# the entry for the host's suite, main component. --no-release-info: lists need not have been downloaded yet.
host_suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
# shellcheck disable=SC2016 # $(REPO_URI) and the others are apt's placeholders, not the shell's
mirror=$(apt-get indextargets --no-release-info --format '$(REPO_URI) $(RELEASE) $(COMPONENT) $(TARGET_OF)' |
  awk -v suite="$host_suite" '$2 == suite && $3 == "main" && $4 == "deb" { print $1; exit }')
if [ -z "$mirror" ]; then
  echo "images: no 'deb ... $host_suite main' entry in this machine's apt sources to take a Debian mirror from" >&2
  exit 1
fi

work=$(mktemp -d)
# Every image this run puts into containers storage (built, or loaded from its archive as a base), removed at exit.
stored=()
# The log of the build in progress: shown when the script stops because that build failed.
building=""
cleanup() {
  local status=$? i
  if [ "$status" -ne 0 ] && [ -n "$building" ]; then
    tail -n 40 "$building" >&2
    echo "images: build failed, see $building" >&2
  fi
  for ((i = ${#stored[@]} - 1; i >= 0; i--)); do buildah rmi "${stored[i]}" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# A run killed before its cleanup leaves working containers and images behind, under names only this script uses
# (dbb.local/...); the next build would move the tags and leave them unnamed and unfindable.
buildah containers --format '{{.ContainerID}} {{.ImageName}}' 2>/dev/null |
  awk '$2 ~ /^dbb\.local\// { print $1 }' | xargs -r buildah rm >/dev/null
buildah images --format '{{.Name}}:{{.Tag}}' 2>/dev/null | grep '^dbb\.local/' | xargs -r buildah rmi >/dev/null 2>&1 || true

log() { echo "images: $*" >&2; }

# key INPUT...: the cache key of an image, a sha256 over its inputs. An absolute path of a file stands for the
# file's content, anything else for itself.
key() {
  local input
  for input in "$@"; do
    if [[ $input == /* ]] && [ -f "$input" ]; then
      echo "file $(basename "$input") $(sha256sum < "$input" | cut -d' ' -f1)"
    else
      echo "$input"
    fi
  done | sha256sum | cut -d' ' -f1
}

declare -A keys archives
# image REF KEY BUILDER [ARG...]: print REF and its archive; first, unless the archive for KEY exists, run
# `BUILDER REF ARG...` (which leaves REF in containers storage) and write the archive.
image() {
  local ref=$1 key=$2 builder=$3
  shift 3
  # Named after the repository and the tag, except a tag that is the key itself (the operator's): the name must
  # stay the same across rebuilds to find the archives it supersedes.
  local name=${ref%:*} tag=${ref##*:}
  local stem=${name##*/}
  [ "$tag" = "${key:0:12}" ] || stem=$stem-$tag
  local archive=$cache/$stem-${key:0:16}.tar
  keys[$ref]=$key
  archives[$ref]=$archive
  if [ -s "$archive" ]; then
    log "$ref: cached ($(basename "$archive"))"
  else
    local start=$SECONDS logfile=$cache/logs/$stem.log
    log "$ref: building (log: $logfile)"
    # Not under `if`: that would switch off errexit inside the builder.
    building=$logfile
    "$builder" "$ref" "$@" > "$logfile" 2>&1
    building=""
    rm -f "$archive.tmp"
    buildah push -q "$ref" "docker-archive:$archive.tmp:$ref" >/dev/null
    mv "$archive.tmp" "$archive"
    # Older archives of the same image are superseded; an imported image lives on in containerd.
    find "$cache" -maxdepth 1 -name "$stem-????????????????.tar" ! -path "$archive" -delete
    log "$ref: built in $((SECONDS - start))s, $(du -m "$archive" | cut -f1) MB"
  fi
  echo "$ref $archive"
}

# base REF: make REF, an image built earlier (this run or a previous one), available in containers storage as a
# FROM for the next build, loaded from its archive unless this run built it.
base() {
  local ref=$1 have
  for have in "${stored[@]}"; do [ "$have" = "$ref" ] && return 0; done
  buildah pull -q "docker-archive:${archives[$ref]}" >/dev/null
  stored+=("$ref")
}

# bud REF CONTAINERFILE CONTEXT [BUILDAH-ARG...]: --pull=never: every FROM is one of ours, already in storage, and
# there is no registry to ask. --layers=false: the archive is the cache, intermediate layers would only pile up.
bud() {
  local ref=$1 file=$2 context=$3
  shift 3
  stored+=("$ref")
  buildah bud --pull=never --layers=false --force-rm -f "$file" -t "$ref" "$@" "$context"
}

# --- the cluster's own binaries, FROM scratch ------------------------------------------------------------------

# build_binary REF CONTAINERFILE BINARY: the Containerfile with the binary (a path) alone as its context.
build_binary() {
  local ref=$1 file=$2 binary=$3 context
  context=$work/$(basename "$file" .Containerfile)
  mkdir -p "$context"
  cp "$binary" "$context/"
  bud "$ref" "$file" "$context"
}
for spec in pause:dbb.local/pause:3.10 coredns:dbb.local/coredns:1.15.0 \
  local-path-provisioner:dbb.local/local-path-provisioner:v0.0.30; do
  binary=${spec%%:*} ref=${spec#*:}
  image "$ref" "$(key "$ref" "$images/$binary.Containerfile" "$bin_dir/$binary")" \
    build_binary "$images/$binary.Containerfile" "$bin_dir/$binary"
done
# SeaweedFS, the object store the e2e suite backs up to over S3: the binary the non-e2e tests run (hack/seaweedfs.sh,
# cached). Tagged with its key, like the operator, so that a new binary is a new reference that `load` imports into a
# running cluster; `python -m hack.cluster load` exports it as E2E_SEAWEEDFS_IMG.
weed=$(bash "$here/../seaweedfs.sh")
seaweedfs_key=$(key dbb.local/seaweedfs "$images/seaweedfs.Containerfile" "$weed")
image "dbb.local/seaweedfs:${seaweedfs_key:0:12}" "$seaweedfs_key" \
  build_binary "$images/seaweedfs.Containerfile" "$weed"

# --- Debian, and what is built on it ---------------------------------------------------------------------------

build_debian() {
  local ref=$1 suite=$2 context=$work/debian-$2
  mkdir -p "$context"
  bash "$images/debian-rootfs.sh" "$suite" "$mirror" "$context/rootfs.tar"
  bud "$ref" "$images/debian.Containerfile" "$context"
}
for suite in bookworm trixie; do
  image "dbb.local/debian:$suite" \
    "$(key "$suite" "$mirror" "$images/debian-rootfs.sh" "$images/debian.Containerfile")" build_debian "$suite"
done

# build_on REF CONTAINERFILE BASE [BUILD-ARG...]: a Containerfile of ours, FROM one of our images; the images
# folder is its context (the entrypoint scripts).
build_on() {
  local ref=$1 file=$2 from=$3 arg args=()
  shift 3
  base "$from"
  for arg in "$@"; do args+=(--build-arg "$arg"); done
  bud "$ref" "$file" "$images" --build-arg "BASE=$from" "${args[@]}"
}
# on REF CONTAINERFILE BASE [BUILD-ARG...] [-- FILE...]: build_on through the cache; the key covers the build
# arguments and the files the Containerfile copies.
on() {
  local ref=$1 file=$2 from=$3 build_args=() files=()
  shift 3
  while [ $# -gt 0 ] && [ "$1" != -- ]; do build_args+=("$1"); shift; done
  [ $# -gt 0 ] && shift && files=("$@")
  image "$ref" "$(key "$ref" "$file" "${keys[$from]}" "${build_args[@]}" "${files[@]}")" \
    build_on "$file" "$from" "${build_args[@]}"
}

on dbb.local/postgres:15 "$images/postgres.Containerfile" dbb.local/debian:bookworm PG_MAJOR=15 \
  -- "$images/postgres-entrypoint.sh"
on dbb.local/postgres:17 "$images/postgres.Containerfile" dbb.local/debian:trixie PG_MAJOR=17 \
  -- "$images/postgres-entrypoint.sh"
on dbb.local/mariadb:10.11 "$images/mariadb.Containerfile" dbb.local/debian:bookworm MARIADB_VERSION=10.11 \
  -- "$images/mariadb-entrypoint.sh" "$images/mariadb.cnf"
on dbb.local/mariadb:11.8 "$images/mariadb.Containerfile" dbb.local/debian:trixie MARIADB_VERSION=11.8 \
  -- "$images/mariadb-entrypoint.sh" "$images/mariadb.cnf"
# Prometheus, for the e2e suite's monitoring test: tagged with its key, like SeaweedFS, and exported by
# `python -m hack.cluster load` as E2E_PROMETHEUS_IMG.
prometheus_key=$(key dbb.local/prometheus "$images/prometheus.Containerfile" "${keys[dbb.local/debian:bookworm]}")
image "dbb.local/prometheus:${prometheus_key:0:12}" "$prometheus_key" \
  build_on "$images/prometheus.Containerfile" dbb.local/debian:bookworm
on dbb.local/python:trixie "$images/python.Containerfile" dbb.local/debian:trixie
on dbb.local/python:bookworm "$images/python.Containerfile" dbb.local/debian:bookworm

# --- the operator, from the project's own Dockerfile -------------------------------------------------------------

# The build arguments for this machine: Python and the PostgreSQL clients from Debian trixie, whose clients (17,
# and MariaDB's 11.8) dump every server the cluster runs.
operator_args=(PYTHON_IMAGE=dbb.local/python:trixie PG_CLIENT_SOURCE=debian)  # the newest major trixie ships
# A second build of the same Dockerfile, on bookworm with its PostgreSQL 15 clients: what a user gets who builds
# with Debian's own clients on the older suite. The e2e suite shows that it refuses a PostgreSQL 17 server clearly.
old_client_args=(PYTHON_IMAGE=dbb.local/python:bookworm PG_CLIENT_SOURCE=debian PG_CLIENT_MAJOR=15)
# build_operator REF BUILD-ARG...: the project's Dockerfile with these build arguments (the first names the base).
build_operator() {
  local ref=$1 arg args=() mounts=() file
  shift
  base "${1#PYTHON_IMAGE=}"
  for arg in "$@"; do args+=(--build-arg "$arg"); done
  # pip reaches PyPI through this machine's HTTPS setup (its CA bundle, its pip configuration): lent to the build's
  # RUN steps read-only, never copied into a layer, so the Dockerfile stays the one a user with a registry builds.
  for file in /etc/ssl/certs/ca-certificates.crt /etc/pip.conf; do
    [ -f "$file" ] && mounts+=(-v "$file:$file:ro")
  done
  bud "$ref" "$repo/Dockerfile" "$repo" "${args[@]}" "${mounts[@]}"
}
# What the Dockerfile copies, as the build context sees it (.dockerignore leaves out bytecode caches): every source
# of its COPY lines from the context (not --from=), read from the Dockerfile itself so that a folder it starts
# copying is never left out of the key.
operator_inputs() {
  (
    cd "$repo"
    local sources
    mapfile -t sources < <(awk '$1 == "COPY" && $2 !~ /^--/ { for (i = 2; i < NF; i++) print $i }' Dockerfile)
    [ ${#sources[@]} -gt 0 ] || { echo "images: no COPY in the Dockerfile" >&2; exit 1; }
    for file in Dockerfile .dockerignore; do echo "$file $(sha256sum < "$file")"; done
    find "${sources[@]}" -type f ! -path '*/__pycache__/*' ! -name '*.py[cod]' -print0 |
      LC_ALL=C sort -z | xargs -0 sha256sum
  )
}
inputs=$(operator_inputs)
operator_key=$(key "${keys[dbb.local/python:trixie]}" "${operator_args[@]}" "$inputs")
image "dbb.local/databasebackup-operator:${operator_key:0:12}" "$operator_key" build_operator "${operator_args[@]}"
old_client_key=$(key "${keys[dbb.local/python:bookworm]}" "${old_client_args[@]}" "$inputs")
image "dbb.local/databasebackup-operator-pg15:${old_client_key:0:12}" "$old_client_key" build_operator \
  "${old_client_args[@]}"

log "all images ready in ${SECONDS}s"
