"""Generate the Python protobuf modules under abci_app/pb/ from proto/.

protoc writes absolute imports (`from tendermint.abci import ...`); we rewrite
them to live under abci_app.pb so nothing claims a top-level `tendermint`
package. tests/test_proto.py runs this into a temp dir and fails when the
committed code is stale.
"""

import pathlib
import re
import sys

from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PACKAGES = ("tendermint", "gradchain")


def proto_files() -> list[pathlib.Path]:
    return sorted(PROTO_DIR.rglob("*.proto"))


def generate(out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Write *_pb2.py files into out_dir; return them sorted."""
    out_dir.mkdir(parents=True, exist_ok=True)
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    args = ["protoc", f"-I{PROTO_DIR}", f"-I{include}", f"--python_out={out_dir}"]
    args += [str(p.relative_to(PROTO_DIR)) for p in proto_files()]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    written = sorted(out_dir.rglob("*_pb2.py"))
    pattern = re.compile(rf"^from ({'|'.join(PACKAGES)})(\.[\w.]*)? import", re.M)
    for path in written:
        text = pattern.sub(lambda m: f"from abci_app.pb.{m.group(1)}{m.group(2) or ''} import", path.read_text())
        path.write_text(text)
    for path in written:
        directory = path.parent
        while True:
            (directory / "__init__.py").touch()
            if directory == out_dir:
                break
            directory = directory.parent
    return written


if __name__ == "__main__":
    target = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "abci_app" / "pb"
    for path in generate(target):
        print(path.relative_to(target))
