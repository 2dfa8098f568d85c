#!/usr/bin/env bash
# Installs ligerd's build dependencies (Debian packages) and builds it (Release) into build/release.
# Idempotent: packages already present are not reinstalled, and the build is incremental.
#   bash scripts/setup.sh            # install + build
#   LIGERD_BUILD_TYPE=Debug bash scripts/setup.sh
#   LIGERD_CMAKE_ARGS="-DLIGERD_BUILD_PYTHON=ON" bash scripts/setup.sh   # extra configure arguments
set -euo pipefail
cd "$(dirname "$0")/.."

# gRPC/protobuf/abseil and GoogleTest from Debian; the CUDA toolkit (nvcc, NVRTC, headers) must
# already be installed (it is not in Debian's main archive): /usr/local/cuda or CUDA_HOME.
packages=(build-essential cmake ninja-build pkg-config git
          libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
          libabsl-dev libgtest-dev libgmock-dev
          prometheus-cpp-dev libmicrohttpd-dev libjs-dygraphs)  # telemetry: text format, HTTP, charts
missing=()
# Where the libraries are already reachable (e.g. unpacked from .device/env.sh on a machine with
# no package registry), apt is not needed.
if pkg-config --exists grpc++ protobuf prometheus-cpp-core libmicrohttpd 2>/dev/null && command -v protoc >/dev/null \
    && command -v grpc_cpp_plugin >/dev/null && [ -f /usr/share/javascript/dygraphs/dygraph.min.js ]; then
  packages=()
fi
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# systemd-analyze, for the deploy tests' checks of the systemd units (tests/python/test_deploy.py).
if ! command -v systemd-analyze >/dev/null; then
  echo "setup: installing systemd (systemd-analyze checks deploy/systemd)"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends systemd
fi

# Debian's clang and libFuzzer for the fuzz targets (scripts/fuzz.sh, tests/fuzz/README.md); the
# build itself uses the default compiler.
if ! command -v clang++ >/dev/null || ! dpkg-query -W -f='${Status}' libclang-rt-dev 2>/dev/null | grep -q "ok installed"; then
  echo "setup: installing clang and libclang-rt-dev (the libFuzzer targets: scripts/fuzz.sh)"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends clang libclang-rt-dev
fi

cuda_home=${CUDA_HOME:-/usr/local/cuda}
if [ ! -x "$cuda_home/bin/nvcc" ] && ! command -v nvcc >/dev/null; then
  echo "setup: no CUDA toolkit found (looked in \$CUDA_HOME, /usr/local/cuda and PATH)." >&2
  echo "       Install the CUDA toolkit (12.4 or newer) and run this again." >&2
  exit 1
fi
export PATH="$cuda_home/bin:$PATH"

build_type=${LIGERD_BUILD_TYPE:-Release}
build_dir=${LIGERD_BUILD_DIR:-build/$(echo "$build_type" | tr '[:upper:]' '[:lower:]')}
start=$(date +%s)
mkdir -p "$build_dir"
# shellcheck disable=SC2086
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="$build_type" ${LIGERD_CMAKE_ARGS:-} > "$build_dir/configure.log" 2>&1 \
  || { cat "$build_dir/configure.log" >&2; exit 1; }
cmake --build "$build_dir" -j"$(nproc)"
echo "setup: built $build_dir in $(( $(date +%s) - start )) s: $build_dir/server/ligerd, $build_dir/client/ligerctl"
