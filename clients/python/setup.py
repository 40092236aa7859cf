"""Build hook: generates the ``keel.v1`` protobuf/gRPC modules at build time.

The generated code is not checked in. ``build_py`` runs ``grpc_tools.protoc``
(the pinned grpcio-tools from ``[build-system] requires``; no remote plugins)
over every ``keel/v1/*.proto`` and writes ``*_pb2.py``, ``*_pb2.pyi`` and
``*_pb2_grpc.py`` into ``src/keel/v1`` (git-ignored), from where the normal
build copies them into the wheel; editable installs use them in place.

The protos are looked for in ``$KEEL_PROTO_DIR``, then ``../../proto`` (a
build from the repository), then ``./proto`` (an sdist, which carries a copy:
see ``sdist`` below).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py as _build_py
from setuptools.command.sdist import sdist as _sdist

HERE = Path(__file__).resolve().parent
OUT = HERE / "src"


def proto_root() -> Path:
    candidates = []
    if os.environ.get("KEEL_PROTO_DIR"):
        candidates.append(Path(os.environ["KEEL_PROTO_DIR"]))
    candidates += [HERE.parent.parent / "proto", HERE / "proto"]
    for root in candidates:
        if (root / "keel" / "v1" / "session.proto").is_file():
            return root.resolve()
    raise SystemExit(
        "keel-client: cannot find keel/v1/session.proto in "
        + ", ".join(str(c) for c in candidates)
        + " (set KEEL_PROTO_DIR to the repository's proto/ directory)"
    )


def generate() -> None:
    import grpc_tools
    from grpc_tools import protoc

    root = proto_root()
    protos = sorted(str(p.relative_to(root)) for p in (root / "keel" / "v1").glob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    target = OUT / "keel" / "v1"
    for old in target.glob("*_pb2*.py*"):
        old.unlink()
    args = [
        "grpc_tools.protoc",
        f"-I{root}",
        f"-I{well_known}",
        f"--python_out={OUT}",
        f"--pyi_out={OUT}",
        f"--grpc_python_out={OUT}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"keel-client: protoc failed: {' '.join(args)}")


class build_py(_build_py):
    def run(self) -> None:
        generate()
        # The package-data globs (the .pyi files) are computed lazily; compute
        # them again now that the files exist.
        self.data_files = self._get_data_files()
        super().run()


class sdist(_sdist):
    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        root = proto_root()
        dest = Path(base_dir) / "proto" / "keel" / "v1"
        dest.mkdir(parents=True, exist_ok=True)
        for proto in (root / "keel" / "v1").glob("*.proto"):
            shutil.copy2(proto, dest / proto.name)


setup(cmdclass={"build_py": build_py, "sdist": sdist})
