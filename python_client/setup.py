"""Builds ligerd._C with the project's CMake (the repository root is this directory's parent).

    pip install --no-build-isolation --no-deps ./python_client

Environment:
  LIGERD_CMAKE_BUILD_DIR  reuse this CMake build directory (e.g. /tmp/b from the main build):
                          only the extension target is (re)built there.
  LIGERD_CMAKE_ARGS       extra arguments for the CMake configure step.
  LIGERD_BUNDLE_DAEMON=1  also build the ligerd binary and ship it as ligerd/bin/ligerd, where
                          the client looks for a daemon to autostart.
  CMAKE_BUILD_PARALLEL_LEVEL  build jobs (default: all cores).
"""

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


def _run(cmd, **kw):
    print("+ " + " ".join(shlex.quote(str(c)) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kw)


class CMakeBuild(build_ext):
    def run(self):
        try:
            import torch  # noqa: F401
        except ImportError:
            sys.exit("ligerd: building ligerd._C needs the torch it will run with; install with "
                     "`pip install --no-build-isolation --no-deps ./python_client` from an "
                     "environment where `import torch` works.")
        if not (ROOT / "CMakeLists.txt").is_file() or not (ROOT / "kernels").is_dir():
            sys.exit(f"ligerd: expected the ligerd repository around {HERE} (no {ROOT}/CMakeLists.txt); "
                     "build from a checkout, not from a copied python_client/ alone.")
        super().run()

    def build_extension(self, ext):
        build_dir = Path(os.environ.get("LIGERD_CMAKE_BUILD_DIR") or Path(self.build_temp).resolve() / "cmake")
        build_dir.mkdir(parents=True, exist_ok=True)
        cache = build_dir / "CMakeCache.txt"
        configured = cache.is_file() and "LIGERD_BUILD_PYTHON:BOOL=ON" in cache.read_text(errors="replace")
        if not configured:
            args = ["cmake", "-S", ROOT, "-B", build_dir, "-DLIGERD_BUILD_PYTHON=ON",
                    f"-DPython3_EXECUTABLE={sys.executable}"]
            if not cache.is_file():
                args += ["-DCMAKE_BUILD_TYPE=Release", "-DLIGERD_BUILD_TESTS=OFF"]
                if shutil.which("ninja"):
                    args += ["-G", "Ninja"]
            args += shlex.split(os.environ.get("LIGERD_CMAKE_ARGS", ""))
            _run(args)
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 4)
        targets = ["ligerd_python_ext"]
        bundle = os.environ.get("LIGERD_BUNDLE_DAEMON", "").strip() not in ("", "0")
        if bundle:
            targets.append("ligerd")
        _run(["cmake", "--build", build_dir, "-j", jobs, "--target", *targets])

        built = sorted((build_dir / "python" / "ligerd").glob("_C*.so"))
        if not built:
            sys.exit(f"ligerd: the build produced no _C*.so under {build_dir}/python/ligerd")
        dest = Path(self.get_ext_fullpath(ext.name))
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(built[-1], dest)  # a copy keeps the build tree's RPATH (absl, torch libs)
        if bundle:
            daemon = next((p for p in build_dir.rglob("ligerd") if p.is_file() and os.access(p, os.X_OK)), None)
            if daemon is None:
                sys.exit(f"ligerd: LIGERD_BUNDLE_DAEMON=1 but no ligerd binary under {build_dir}")
            (dest.parent / "bin").mkdir(exist_ok=True)
            shutil.copy2(daemon, dest.parent / "bin" / "ligerd")


setup(ext_modules=[CMakeExtension("ligerd._C")], cmdclass={"build_ext": CMakeBuild})
