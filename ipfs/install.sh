#!/usr/bin/env bash
# Builds upstream Kubo (the `ipfs` binary) at the version pinned in
# ipfs/kubo/go.mod, through that small module of ours: Kubo's own go.mod has
# exclude directives, which `go install pkg@version` refuses. The binary goes
# to a cache that later clones reuse; bin/ipfs links to it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../scripts/lib.sh"
version="$(cd "$here/kubo" && awk '$1 == "github.com/ipfs/kubo" { print $2 }' go.mod)"
target="$GRADCHAIN_CACHE/bin/ipfs-$version"

if [ -x "$target" ] && [ "v$("$target" version --number)" = "$version" ]; then
  link_cached ipfs "$version"
  echo "ipfs (kubo) $version (cached at $target)"
  exit 0
fi
command -v go >/dev/null || { echo "error: Go is required to build Kubo (https://go.dev/doc/install)" >&2; exit 1; }
echo "building kubo $version with $(go version | cut -d' ' -f3) (several minutes)..."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$here/kubo" && GOFLAGS=-buildvcs=false go build -o "$tmp/ipfs" github.com/ipfs/kubo/cmd/ipfs)
mv "$tmp/ipfs" "$target"
link_cached ipfs "$version"
echo "ipfs (kubo) $("$target" version --number) built at $target"
