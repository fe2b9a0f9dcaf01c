#!/usr/bin/env bash
# Generate Go stubs from protos/ with buf (protoc-gen-go and protoc-gen-go-grpc, pinned, built with the
# local Go toolchain) into a scratch module and compile them: proves every go_package option and import
# is usable by a Go client. Usage: scripts/go_check.sh path/to/buf
set -euo pipefail
buf=$(realpath "$1")
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export GOBIN="$work/bin" PATH="$work/bin:$PATH"
go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.6
go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1
cat >"$work/buf.gen.yaml" <<'YAML'
version: v2
plugins:
  - local: protoc-gen-go
    out: gen
    opt: module=github.com/opscale/opscale
  - local: protoc-gen-go-grpc
    out: gen
    opt: module=github.com/opscale/opscale
YAML
# KEDA's file keeps KEDA's own go_package (".;externalscaler"); it is not part of the Go module.
(cd "$root" && "$buf" generate --template "$work/buf.gen.yaml" --output "$work" --exclude-path protos/opscale/api/keda)
cd "$work/gen"
go mod init github.com/opscale/opscale >/dev/null 2>&1
go mod tidy >/dev/null
go build ./...
echo "go-check: Go stubs for $(find . -name '*.pb.go' | wc -l) files compile"
