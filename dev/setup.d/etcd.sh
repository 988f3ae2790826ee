#!/usr/bin/env bash
# Builds etcd and etcdctl from the Go module proxy. etcd's modules carry `replace => ../api` lines,
# which `go install pkg@version` refuses; in a wrapper module those are ignored and the published
# versions they require are used instead, so no replace lines are needed.
# Usage: etcd.sh VERSION OUTDIR   (GOMODCACHE/GOCACHE come from the caller's environment)
set -euo pipefail
E=${1:?etcd version like 3.6.16}
OUT=${2:?output directory}
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$W"
go mod init local.pier/etcdbins >/dev/null 2>&1
go get "go.etcd.io/etcd/server/v3@v$E" "go.etcd.io/etcd/etcdctl/v3@v$E"
mkdir -p "$OUT.tmp"
go build -trimpath -ldflags "-s -w" -o "$OUT.tmp/etcd" go.etcd.io/etcd/server/v3
go build -trimpath -ldflags "-s -w" -o "$OUT.tmp/etcdctl" go.etcd.io/etcd/etcdctl/v3
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
