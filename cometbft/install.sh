#!/usr/bin/env bash
# Builds CometBFT at the pinned version with the machine's Go, from the module
# source the Go module proxy serves, with our patches (cometbft/patches/*.patch,
# each says why; applied in byte order of their names) applied, into a cache
# that later clones reuse; bin/cometbft links to it. The cached name carries the
# patches' digest, so a changed patch set is rebuilt. A second run with the
# right build present only prints it.
set -euo pipefail
export LC_ALL=C  # one glob order for the patches, here and in tests/unit/test_cometbft_build.py
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
for tool in go git; do
  command -v "$tool" >/dev/null || { echo "error: $tool is required to build CometBFT (Go: https://go.dev/doc/install)" >&2; exit 1; }
done
echo "building cometbft $version with ${#patches[@]} patch(es) and $(go version | cut -d' ' -f3) (a few minutes)..."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# -json reports a failure (no network, unknown version) in its Error field, on stdout.
listing="$(cd "$tmp" && GOFLAGS=-mod=mod GOWORK=off go mod download -json "github.com/cometbft/cometbft@$version" || true)"
module="$(printf '%s\n' "$listing" | awk -F'"' '$2 == "Dir" { print $4 }')"
if [ ! -d "$module" ]; then
  reason="$(printf '%s\n' "$listing" | awk -F'"' '$2 == "Error" { print $4 }')"
  echo "error: could not fetch github.com/cometbft/cometbft@$version from the Go module proxy: ${reason:-no answer}" >&2
  exit 1
fi
cp -r "$module" "$tmp/src"
chmod -R u+w "$tmp/src"
for patch in "${patches[@]}"; do
  # A patch that no longer applies (a new VERSION) fails the build here, by name.
  (cd "$tmp/src" && GIT_CEILING_DIRECTORIES="$tmp" git apply "$patch") \
    || { echo "error: $patch does not apply to cometbft $version" >&2; exit 1; }
done
(cd "$tmp/src" && GOFLAGS=-buildvcs=false GOWORK=off go build -trimpath -o "$tmp/cometbft" ./cmd/cometbft)
# Copied next to its final name first, so the rename is atomic: no half-written binary under the cached name.
cp "$tmp/cometbft" "$target.partial.$$"
mv -f "$target.partial.$$" "$target"
link_cached cometbft "$build"
echo "cometbft $("$target" version) with $(basename -a "${patches[@]}" | paste -sd' ') built at $target"
