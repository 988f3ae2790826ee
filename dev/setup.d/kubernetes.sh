#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager and kube-scheduler from the Go module proxy.
# k8s.io/kubernetes maps its staging modules with `replace => ./staging/...`, which `go install
# pkg@version` refuses, so we build inside a throwaway wrapper module that replaces every staging
# module with its published v0.<minor>.<patch> tag (the list is read from the served go.mod).
# Usage: kubernetes.sh VERSION OUTDIR   (GOMODCACHE/GOCACHE come from the caller's environment)
set -euo pipefail
K=${1:?kubernetes version like 1.35.4}
OUT=${2:?output directory}
CMDS=${CMDS:-"kube-apiserver kube-controller-manager kube-scheduler"}
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$W"
go mod init local.pier/k8sbins >/dev/null 2>&1
GOMOD=$(go mod download -json "k8s.io/kubernetes@v$K" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
[ -s "$GOMOD" ] || { echo "kubernetes: could not download go.mod of k8s.io/kubernetes@v$K" >&2; exit 1; }
MINOR=$(echo "$K" | cut -d. -f2)
PATCH=$(echo "$K" | cut -d. -f3)
for m in $(sed -n 's#^[[:space:]]*\(k8s.io/[A-Za-z0-9._-]*\) => \./staging/.*#\1#p' "$GOMOD"); do
  go mod edit -replace="$m=$m@v0.$MINOR.$PATCH"
done
# Non-staging replace lines of the served go.mod matter too (pinned forks of dependencies).
sed -n 's#^[[:space:]]*\([^k][^ ]*\) => \([^.][^ ]*\) \(v[^ ]*\)$#\1=\2@\3#p' "$GOMOD" | while read -r r; do
  go mod edit -replace="$r"
done
grep -E '^godebug ' "$GOMOD" >> go.mod || true
for c in $CMDS; do go get "k8s.io/kubernetes/cmd/$c@v$K"; done
LDF="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  LDF="$LDF -X $p.gitVersion=v$K -X $p.gitMajor=1 -X $p.gitMinor=$MINOR -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done
mkdir -p "$OUT.tmp"
for c in $CMDS; do
  echo "kubernetes: building $c v$K" >&2
  go build -trimpath -ldflags "$LDF" -o "$OUT.tmp/$c" "k8s.io/kubernetes/cmd/$c"
done
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
