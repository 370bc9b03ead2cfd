#!/usr/bin/env bash
# Builds the local control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kwok) from Go modules into a cache outside the repository, keyed by
# versions, so a fresh clone (CI) reuses what an earlier run compiled.
#
# Prints the directory that holds the binaries (usable as KUBEBUILDER_ASSETS) on stdout;
# progress goes to stderr. Idempotent: a complete cache is reused in milliseconds.
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-v1.37.2}
STAGING_VERSION=${STAGING_VERSION:-v0.${KUBE_VERSION#v1.}}
ETCD_VERSION=${ETCD_VERSION:-v3.7.3}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}

CACHE_ROOT=${SELFHEAL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/selfheal}
BIN_DIR="$CACHE_ROOT/controlplane/kube-$KUBE_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION"
BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok)
KUBE_COMMANDS=(kube-apiserver kube-controller-manager kube-scheduler kubectl)

log() { printf '[controlplane] %s\n' "$*" >&2; }

complete() {
  local b
  for b in "${BINARIES[@]}"; do [ -x "$BIN_DIR/$b" ] || return 1; done
}

if complete; then
  echo "$BIN_DIR"
  exit 0
fi

# One build at a time: a second caller waits for the first and then reuses its result.
mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/controlplane.lock"
if ! flock -n 9; then
  log "another build of the control plane is running; waiting for it"
  flock 9
fi
if complete; then
  echo "$BIN_DIR"
  exit 0
fi

start=$(date +%s)
log "compiling the local control plane into $BIN_DIR"
log "first run only: about 15 minutes on 2 cores with an empty Go build cache (kube $KUBE_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION)"
mkdir -p "$BIN_DIR"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export GOFLAGS=-mod=mod CGO_ENABLED=0 GOWORK=off

# kubernetes: its go.mod replaces every staging module with a local path, so a wrapper
# module requires it and points each of those modules at the published release instead.
missing=()
for c in "${KUBE_COMMANDS[@]}"; do [ -x "$BIN_DIR/$c" ] || missing+=("$c"); done
if [ ${#missing[@]} -gt 0 ]; then
  mkdir -p "$work/kube"
  modfile=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
  {
    echo "module selfheal.dev/controlplane/kube"
    echo
    echo "go $(sed -n 's/^go \([0-9.]*\)$/\1/p' "$modfile")"
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#replace \1 => \1 '"$STAGING_VERSION"'#p' "$modfile"
  } >"$work/kube/go.mod"
  cat >"$work/kube/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  (cd "$work/kube" && go mod tidy -e >/dev/null 2>&1 || true
   cd "$work/kube" && go get "k8s.io/kubernetes@$KUBE_VERSION" >&2
   for c in "${missing[@]}"; do
     log "building $c"
     go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION" \
       -o "$BIN_DIR/$c.tmp" "k8s.io/kubernetes/cmd/$c" && mv "$BIN_DIR/$c.tmp" "$BIN_DIR/$c"
   done)
fi

if [ ! -x "$BIN_DIR/etcd" ]; then
  log "building etcd"
  mkdir -p "$work/etcd"
  printf 'module selfheal.dev/controlplane/etcd\n\ngo 1.26\n' >"$work/etcd/go.mod"
  cat >"$work/etcd/tools.go" <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
  (cd "$work/etcd" && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2 &&
   go build -trimpath -ldflags "-s -w" -o "$BIN_DIR/etcd.tmp" go.etcd.io/etcd/server/v3 &&
   mv "$BIN_DIR/etcd.tmp" "$BIN_DIR/etcd")
fi

if [ ! -x "$BIN_DIR/kwok" ]; then
  log "building kwok"
  GOBIN="$work/gobin" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  mv "$work/gobin/kwok" "$BIN_DIR/kwok"
fi

complete || { log "build incomplete in $BIN_DIR"; exit 1; }
log "control plane ready in $(( $(date +%s) - start ))s"
echo "$BIN_DIR"
