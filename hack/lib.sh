# Shell helpers shared by the hack/ scripts. Source it.

# apt_install PACKAGE...: install Debian packages that are missing (as root, or through sudo).
apt_install() {
  local missing=() package
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null; then
    echo "hack: please install ${missing[*]} (no apt-get on this machine)" >&2
    return 1
  fi
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  echo "hack: installing ${missing[*]} with apt-get" >&2
  # Debian's postinst scripts start the packaged services (a database, Prometheus); in a container without an init
  # system that fails noisily or hangs, and the tests never use them: they run their own servers in temporary
  # folders on 127.0.0.1. policy-rc.d exit code 101 means "action not allowed".
  local policy=/usr/sbin/policy-rc.d created="" status=0
  if [ ! -e "$policy" ] && [ "$(id -u)" -eq 0 ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created=1
  fi
  "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq >&2 &&
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
    status=$?
  [ -z "$created" ] || rm -f "$policy"
  return "$status"
}

# k8s_wrapper_module VERSION: in the current (empty) folder, make a Go module that requires k8s.io/kubernetes
# vVERSION and replaces every staging module with its published v0.Y.Z tag, so that `go build k8s.io/kubernetes/cmd/X`
# resolves. Why: k8s.io/kubernetes requires its staging modules (k8s.io/api, ...) at v0.0.0 and replaces them with
# ./staging paths, which a dependent module does not inherit; the list changes between releases, so it is read from
# that tag's own go.mod.
k8s_wrapper_module() {
  local version=$1 gomod args
  go mod init dbb.local/k8s-wrapper >/dev/null 2>&1
  gomod=$(go mod download -json "k8s.io/kubernetes@v$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  args=$(go mod edit -json "$gomod" | python3 -c '
import json, sys
version = sys.argv[1]
for r in json.load(sys.stdin).get("Replace") or []:
    if r["New"]["Path"].startswith("./staging/"):
        path = r["Old"]["Path"]
        print(f"-replace={path}={path}@{version}")
' "v0.${version#*.}")
  # shellcheck disable=SC2086
  go mod edit -require="k8s.io/kubernetes@v$version" $args
}

# k8s_version_ldflags VERSION: -X flags that stamp VERSION into a Kubernetes binary (else it says v0.0.0-master).
# kubectl reads its version from client-go's copy of the version package, the servers from component-base's.
k8s_version_ldflags() {
  local version=$1 flags="" pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=v$version -X $pkg.gitMajor=${version%%.*}"
    flags+=" -X $pkg.gitMinor=$(echo "$version" | cut -d. -f2) -X $pkg.gitTreeState=clean"
    flags+=" -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$flags"
}

# given_tool NAME VARIABLE: print the path in $VARIABLE and succeed when it is an executable (a tool the caller was
# handed, as HELM); else fail, saying why when it was set, so that the caller falls back to its cache or build.
given_tool() {
  local name=$1 variable=$2 path=${!2:-}
  [ -n "$path" ] || return 1
  if [ -x "$path" ]; then echo "$path"; return 0; fi
  echo "$name: $variable=$path is not an executable; using the cache" >&2
  return 1
}

# go_tool CACHE BINARY VERSION MODULE PACKAGE [LDFLAGS]: print the path of BINARY, the Go command PACKAGE of
# MODULE@VERSION, built once (under a lock, so parallel callers build it once) into ~/.cache/CACHE/VERSION/BINARY.
# LDFLAGS are added to the link, e.g. -X flags that stamp the version. Progress goes to stderr, only the path to stdout.
go_tool() {
  local cache=$1 binary=$2 version=$3 module=$4 package=$5 ldflags=${6:-}
  local cache_root=${XDG_CACHE_HOME:-$HOME/.cache}/$cache
  local dest=$cache_root/$version/$binary
  if [ -x "$dest" ]; then echo "$dest"; return 0; fi
  command -v go >/dev/null || { echo "$binary: go is needed to build it; install Go 1.24+" >&2; return 1; }
  mkdir -p "$cache_root"
  (
    flock 9
    [ -x "$dest" ] && exit 0
    export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    start=$(date +%s)
    echo "$binary: building $module@$version from Go modules" >&2
    cd "$work"
    go mod init "dbb.local/$cache" >/dev/null 2>&1
    go get "$module@$version" >&2
    go build -trimpath -ldflags "-s -w $ldflags" -o "$work/$binary" "$package" >&2
    mkdir -p "$(dirname "$dest")"
    mv "$work/$binary" "$dest.tmp" && mv "$dest.tmp" "$dest"
    echo "$binary: built in $(($(date +%s) - start))s into $dest" >&2
  ) 9>"$cache_root/.lock"
  echo "$dest"
}
