"""Regenerate the Python gRPC code from proto/coalition/v1/*.proto.

    python scripts/gen_proto.py          # write coalition.v1 *_pb2*.py(i) beside the protos
    python scripts/gen_proto.py --check  # exit 1 if the committed code differs (CI)

Pinned grpcio-tools and mypy-protobuf (pyproject's dev extra) make the output reproducible.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "proto"
PACKAGE_DIR = PROTO_ROOT / "coalition" / "v1"
GENERATED_GLOBS = ("*_pb2.py", "*_pb2.pyi", "*_pb2_grpc.py", "*_pb2_grpc.pyi")


def generate(out_dir: Path) -> None:
    # protoc finds the mypy-protobuf plugins on PATH: use the ones beside this interpreter.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PACKAGE_DIR.glob("*.proto"))
    include = str(Path(protoc.__file__).parent / "_proto")  # google/protobuf/*.proto
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def generated_files(directory: Path) -> set[str]:
    return {p.name for pattern in GENERATED_GLOBS for p in directory.glob(pattern)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the code is stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh_dir = Path(tmp) / "coalition" / "v1"
        fresh, committed = generated_files(fresh_dir), generated_files(PACKAGE_DIR)
        if args.check:
            stale = sorted(fresh ^ committed) + sorted(
                n
                for n in fresh & committed
                if not filecmp.cmp(fresh_dir / n, PACKAGE_DIR / n, shallow=False)
            )
            if stale:
                print("generated code is stale; run python scripts/gen_proto.py:", *stale)
                return 1
            print(f"generated code matches the protos ({len(fresh)} files)")
            return 0
        for name in committed - fresh:
            (PACKAGE_DIR / name).unlink()
        for name in fresh:
            shutil.copyfile(fresh_dir / name, PACKAGE_DIR / name)
    print(f"wrote {len(fresh)} files to {PACKAGE_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
