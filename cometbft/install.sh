#!/usr/bin/env bash
# Builds upstream CometBFT at the pinned version with the machine's Go, from
# the Go module proxy, into a cache that later clones reuse; bin/cometbft
# links to it. A second run with the right version present only prints it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../scripts/lib.sh"
version="$(tr -d '[:space:]' < "$here/VERSION")"
target="$GRADCHAIN_CACHE/bin/cometbft-$version"

if [ -x "$target" ] && [ "v$("$target" version)" = "$version" ]; then
  link_cached cometbft "$version"
  echo "cometbft $version (cached at $target)"
  exit 0
fi
command -v go >/dev/null || { echo "error: Go is required to build CometBFT (https://go.dev/doc/install)" >&2; exit 1; }
echo "building cometbft $version with $(go version | cut -d' ' -f3) (a few minutes)..."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
GOBIN="$tmp" GOFLAGS=-buildvcs=false go install "github.com/cometbft/cometbft/cmd/cometbft@$version"
mv "$tmp/cometbft" "$target"
link_cached cometbft "$version"
echo "cometbft $("$target" version) built at $target"
