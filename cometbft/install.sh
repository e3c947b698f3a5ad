#!/usr/bin/env bash
# Builds CometBFT at the pinned version with the machine's Go, from the module
# source the Go module proxy serves, with our patches (cometbft/patches/*.patch,
# each says why) applied, into a cache that later clones reuse; bin/cometbft
# links to it. The cached name carries the patches' digest, so a changed patch
# set is rebuilt. A second run with the right build present only prints it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../scripts/lib.sh"
version="$(tr -d '[:space:]' < "$here/VERSION")"
patches=("$here"/patches/*.patch)
build="$version-p$(cat "${patches[@]}" | sha256sum | cut -c1-12)"
target="$GRADCHAIN_CACHE/bin/cometbft-$build"

if [ -x "$target" ] && [ "v$("$target" version)" = "$version" ]; then
  link_cached cometbft "$build"
  echo "cometbft $version with ${#patches[@]} patch(es) (cached at $target)"
  exit 0
fi
command -v go >/dev/null || { echo "error: Go is required to build CometBFT (https://go.dev/doc/install)" >&2; exit 1; }
echo "building cometbft $version with ${#patches[@]} patch(es) and $(go version | cut -d' ' -f3) (a few minutes)..."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
module="$(cd "$tmp" && GOFLAGS=-mod=mod go mod download -json "github.com/cometbft/cometbft@$version" | awk -F'"' '$2 == "Dir" { print $4 }')"
[ -d "$module" ] || { echo "error: the Go module proxy gave no source for github.com/cometbft/cometbft@$version" >&2; exit 1; }
cp -r "$module" "$tmp/src"
chmod -R u+w "$tmp/src"
for patch in "${patches[@]}"; do
  # A patch that no longer applies (a new VERSION) fails the build here, by name.
  (cd "$tmp/src" && GIT_CEILING_DIRECTORIES="$tmp" git apply "$patch") \
    || { echo "error: $patch does not apply to cometbft $version" >&2; exit 1; }
done
(cd "$tmp/src" && GOFLAGS=-buildvcs=false go build -trimpath -o "$tmp/cometbft" ./cmd/cometbft)
mv "$tmp/cometbft" "$target"
link_cached cometbft "$build"
echo "cometbft $("$target" version) with $(basename -a "${patches[@]}" | paste -sd' ') built at $target"
