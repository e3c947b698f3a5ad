# Shared by the install scripts: where built things are cached across clones.
# A fresh clone finds binaries and the venv that an earlier run built here.
GRADCHAIN_CACHE="${GRADCHAIN_CACHE:-$HOME/.cache/gradchain}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_DIR="$REPO_ROOT/bin"
mkdir -p "$GRADCHAIN_CACHE/bin" "$BIN_DIR"

# link_cached NAME VERSION: expose a cached binary as bin/NAME.
link_cached() {
  ln -sfn "$GRADCHAIN_CACHE/bin/$1-$2" "$BIN_DIR/$1"
}
