#!/usr/bin/env bash
# debian-rootfs.sh SUITE MIRROR OUT_TAR: a minimal Debian root filesystem as a tar, for `ADD` into an empty image.
# debootstrap's minbase variant (essential + apt), then what official Debian images also strip: device nodes (the
# runtime provides /dev), apt's lists and caches, logs. Paths that only matter to a human at a terminal (docs, man
# pages, translations) are excluded from every later `apt-get install` too, like the official slim images do.
set -euo pipefail
suite=$1 mirror=$2 out=$3

root=$(mktemp -d "${TMPDIR:-/tmp}/dbb-rootfs-$suite.XXXXXX")
trap 'rm -rf "$root"' EXIT
# mktemp's 0700 would become the image's / and lock every non-root user out of the whole filesystem.
chmod 0755 "$root"

# Written before debootstrap unpacks anything, so that its own packages already skip these paths.
mkdir -p "$root/etc/dpkg/dpkg.cfg.d"
cat > "$root/etc/dpkg/dpkg.cfg.d/slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
CFG

debootstrap --variant=minbase --merged-usr "$suite" "$root" "$mirror" >&2
# debootstrap unpacks the essential packages itself, past dpkg and so past the excludes: apply them once here.
find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
rm -rf "$root"/usr/share/{man,groff,info,lintian,linda}/*

# Images are built and thrown away, never upgraded in place: keep no downloaded .debs and no index translations,
# and never pull in recommended packages behind an image's back.
cat > "$root/etc/apt/apt.conf.d/docker-clean" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
cat > "$root/etc/apt/apt.conf.d/docker-no-languages" <<'CFG'
Acquire::Languages "none";
CFG
cat > "$root/etc/apt/apt.conf.d/docker-no-recommends" <<'CFG'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
CFG
# Only the suite itself, from the mirror debootstrap used. The host's own apt settings are not copied in: a suite's
# Release file carries no Valid-Until (only -updates and -security do, which the image does not list), so the image's
# apt needs no Acquire::Check-Valid-Until or Check-Date override to read it.
echo "deb $mirror $suite main" > "$root/etc/apt/sources.list"
rm -f "$root"/etc/apt/sources.list.d/*

rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/ldconfig/aux-cache \
  "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old \
  "$root"/var/log/* "$root"/tmp/* "$root"/var/tmp/* "$root"/root/.bash_history
find "$root/dev" -mindepth 1 -delete
# The build host's name and resolver are not the image's: the runtime mounts its own (rm: it may be a symlink).
: > "$root/etc/hostname"
rm -f "$root/etc/resolv.conf"
: > "$root/etc/resolv.conf"

tar --numeric-owner --xattrs --acls -C "$root" -cf "$out.tmp" .
mv "$out.tmp" "$out"
