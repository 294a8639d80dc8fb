#!/usr/bin/env bash
# Builds the local control plane's binaries from Go modules (no Docker, no kind):
# kube-apiserver, kube-controller-manager, kube-scheduler and kubectl from
# k8s.io/kubernetes, etcd from go.etcd.io/etcd/server/v3, helm, the versitygw
# S3-compatible server, and promtool (Prometheus' rule checker, for the chart's alerts). Output goes to a cache directory keyed on every pinned
# module version and the Go version, so a second run with the same pins is a no-op.
#
# Usage: localcluster/build-binaries.sh            # prints the bin directory
# Env:   FTO_CACHE_DIR (default ~/.cache/finetune-operator)
set -euo pipefail

KUBE_VERSION=v1.36.3       # k8s.io/kubernetes; staging modules are v0.<minor>.<patch>
ETCD_VERSION=v3.6.16       # go.etcd.io/etcd/server/v3
HELM_VERSION=v3.22.0       # helm.sh/helm/v3
VERSITYGW_VERSION=v1.8.0   # github.com/versity/versitygw
PROMETHEUS_VERSION=v0.316.0  # github.com/prometheus/prometheus (Prometheus 3.16.0)

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${FTO_CACHE_DIR:-$HOME/.cache/finetune-operator}"
key="$(printf '%s\n' "$KUBE_VERSION" "$ETCD_VERSION" "$HELM_VERSION" "$VERSITYGW_VERSION" \
        "$PROMETHEUS_VERSION" \
        "$(go env GOVERSION)" "$(cat "$here/build-binaries.sh" "$here"/go/*/main.go)" \
        | sha256sum | cut -c1-16)"
bin="$cache_root/bin-$key"
want=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl helm versitygw promtool)

log() { echo "build-binaries: $*" >&2; }
complete() { for b in "${want[@]}"; do [[ -x "$bin/$b" ]] || return 1; done; }

# Whether another key's directory may go is told by a stamp file in it, not by looking for
# its users' processes (a test run may not have started one yet, or be between two control
# planes, or run in another PID namespace sharing this cache). Every user refreshes the
# stamp's mtime: this script each time it reports or builds a directory, and
# finetune_localcluster.binaries.find_binaries on every call (FTO_BIN_DIR included).
stamp=.last-used
keep_days=7
mark_used() { touch "$1/$stamp" 2>/dev/null || log "could not refresh $1/$stamp"; }

# Binaries of other keys (older pins, another Go) take ~450 MB each: remove those unused for
# $keep_days days, and every bin-*.tmp (an interrupted build's: this runs only while holding
# the build lock, so no build is writing one). A directory with no stamp (built before
# stamps existed) gets one now, so it goes $keep_days days later.
prune() {
  local old used age
  for old in "$cache_root"/bin-*; do
    [[ "$old" != "$bin" && -d "$old" ]] || continue
    if [[ "$old" == *.tmp ]]; then
      log "removing $old, left by an interrupted build"
    elif ! used="$(stat -c %Y "$old/$stamp" 2>/dev/null)"; then
      log "keeping stale $old for $keep_days days from now: no record of its last use"
      mark_used "$old"; continue
    elif age=$(($(date +%s) - used)); ((age < keep_days * 86400)); then
      log "keeping stale $old: last used $((age / 3600)) hours ago"; continue
    else
      log "removing stale $old: unused for $((age / 86400)) days"
    fi
    rm -rf "$old" || log "could not remove $old"
  done
}

# Hand the complete directory to the caller, marked used (pruning is the caller's to do).
report() { mark_used "$bin"; echo "$bin"; exit 0; }

if complete; then
  # Pruning here too removes what went unused since; skipped while a build holds the lock.
  if { exec 9>"$cache_root/.build.lock"; } 2>/dev/null && flock -n 9; then prune; fi
  report
fi

mkdir -p "$cache_root"
# One build at a time per cache: a second caller waits, then finds the binaries built.
exec 9>"$cache_root/.build.lock"
flock 9
if complete; then prune; report; fi
work="$(mktemp -d)"
# A failed build, or one stopped by Ctrl-C, leaves neither its scratch directory nor a
# partial bin dir (one killed otherwise leaves bin-<key>.tmp, removed by the next run).
trap 'rm -rf "$work" "$bin.tmp"' EXIT
rm -rf "$bin.tmp"; mkdir -p "$bin.tmp"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
start=$SECONDS

# --- Kubernetes: a wrapper module that requires k8s.io/kubernetes and maps each
# staging module (./staging/src/k8s.io/X in its go.mod) to the published k8s.io/X
# v0.<minor>.<patch>. The replace list is generated from the downloaded go.mod.
kube_dir="$work/kube"; mkdir -p "$kube_dir"
staging_version="v0.${KUBE_VERSION#v1.}"
modfile="$(cd "$kube_dir" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" \
           | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
{
  echo "module localcluster/kube"
  grep -E '^go [0-9]' "$modfile"
  grep -E '^godebug ' "$modfile" || true
  echo "require k8s.io/kubernetes $KUBE_VERSION"
  echo "replace ("
  grep -E '^\s*k8s.io/[a-z0-9-]+ => ./staging/src/k8s.io/' "$modfile" \
    | awk -v v="$staging_version" '{print "\t" $1 " => " $1 " " v}'
  echo ")"
} > "$kube_dir/go.mod"
cp "$here/go/kube/main.go" "$kube_dir/tools.go"
(cd "$kube_dir" && go mod tidy >/dev/null 2>&1 || go mod tidy)
ver="$KUBE_VERSION"; minor="${ver#v1.}"; minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  ldflags+=" -X $pkg.gitVersion=$ver -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  log "building $cmd $KUBE_VERSION"
  (cd "$kube_dir" && go build -trimpath -ldflags "$ldflags" -o "$bin.tmp/$cmd" "k8s.io/kubernetes/cmd/$cmd")
done

# --- etcd: a wrapper module whose main calls etcdmain, as the upstream binary does.
etcd_dir="$work/etcd"; mkdir -p "$etcd_dir"
cp "$here/go/etcd/main.go" "$etcd_dir/main.go"
(cd "$etcd_dir" && go mod init localcluster/etcd >/dev/null 2>&1 \
  && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1 && go mod tidy >/dev/null 2>&1)
log "building etcd $ETCD_VERSION"
(cd "$etcd_dir" && go build -trimpath -ldflags "-s -w" -o "$bin.tmp/etcd" .)

# --- helm, versitygw and promtool have no replace directives, so go install works directly.
log "building helm $HELM_VERSION"
GOBIN="$bin.tmp" go install -trimpath \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
  "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
log "building versitygw $VERSITYGW_VERSION"
GOBIN="$bin.tmp" go install -trimpath -ldflags "-s -w" \
  "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
log "building promtool $PROMETHEUS_VERSION"
GOBIN="$bin.tmp" go install -trimpath -ldflags "-s -w" \
  "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION"

rm -rf "$bin"; mv "$bin.tmp" "$bin"
log "done in $((SECONDS - start))s; $(du -sh "$bin" | cut -f1) of binaries in $bin"
prune
report
