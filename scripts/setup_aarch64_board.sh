#!/usr/bin/env bash
# Set up an emulated aarch64 board: user-mode QEMU, an arm64 Debian sysroot with
# Python 3.11, and the board's Python packages: the deploy side (numpy,
# apache-tvm-ffi, libtvm_runtime.so for the lean runtime) and what TVM's RPC
# server needs (the whole aarch64 apache-tvm wheel, psutil, cloudpickle, tornado).
# Like an edge device, the board runs TVM's runtime only: its Python loads
# libtvm_runtime.so, never the compiler, and has no ml_dtypes (TVM imports it
# only if present). Under QEMU that makes `import tvm` 4x faster (38 s -> 9 s),
# which every RPC server and every session process pays.
# Idempotent: every step is skipped when its output is already in the cache.
#
#   scripts/setup_aarch64_board.sh            # set up (needs root for apt-get)
#   $BOARD/python -c 'import numpy'           # run a Python on the board
#   $BOARD/python -m tvm.exec.rpc_server --tracker 127.0.0.1:9190 --key board
#
# Layout of $BOARD (default ~/.cache/fluidml-tvm/aarch64):
#   debs/      arm64 .deb files        sysroot/  their contents (dpkg -x)
#   site/      PYTHONPATH of the board: aarch64 wheels, sitecustomize.py
#   lib/libtvm_runtime.so              python    host wrapper running the board's python
#   READY      written last; its presence means the board is usable
set -euo pipefail

BOARD="${FLUIDML_AARCH64_BOARD:-$HOME/.cache/fluidml-tvm/aarch64}"
TVM_VERSION=0.27.0.post1
TVM_FFI_VERSION=0.1.14.post1
READY="tvm=$TVM_VERSION tvm_ffi=$TVM_FFI_VERSION rpc runtime-only extra"
HOST_PYTHON="${PYTHON:-$(dirname "$0")/../.venv/bin/python}"
[ -x "$HOST_PYTHON" ] || HOST_PYTHON=python3
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo  # apt-get and dpkg --add-architecture need root
PIP_PLATFORM=(--platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64
              --platform manylinux2014_aarch64 --python-version 3.11
              --implementation cp --only-binary=:all:)

# A board set up by an older version of this script (no RPC server packages) is redone.
if [ "$(cat "$BOARD/READY" 2>/dev/null)" = "$READY" ]; then
  echo "board ready: $BOARD"
  exit 0
fi
rm -f "$BOARD/READY"
mkdir -p "$BOARD"/{debs,sysroot,site,lib}

# 1. Host tools: the emulator and the cross linker TVM's export_library calls.
if ! command -v qemu-aarch64 >/dev/null || ! command -v aarch64-linux-gnu-gcc >/dev/null; then
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
      qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross
fi

# 2. arm64 Python and every library it links, unpacked into one sysroot.
if [ ! -x "$BOARD/sysroot/usr/bin/python3.11" ]; then
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    $SUDO dpkg --add-architecture arm64
  fi
  $SUDO apt-get update -q
  # The dependency closure of Python, arm64 packages only; dpkg/tar are not needed.
  mapfile -t pkgs < <(apt-cache depends --recurse --no-recommends --no-suggests \
      --no-conflicts --no-breaks --no-replaces --no-enhances \
      python3.11-minimal:arm64 libpython3.11-stdlib:arm64 libstdc++6:arm64 \
      | grep -E '^[a-z0-9].*:arm64$' | grep -vE '^(dpkg|tar|install-info):' | sort -u)
  (cd "$BOARD/debs" && apt-get download -q "${pkgs[@]}")
  for deb in "$BOARD"/debs/*.deb; do dpkg -x "$deb" "$BOARD/sysroot"; done
fi

# 3. The board's Python packages (aarch64 or pure wheels): the deploy side, and the
#    whole apache-tvm wheel with the extras TVM's RPC server imports.
if [ ! -d "$BOARD/site/tvm" ]; then
  "$HOST_PYTHON" -m pip install -q --disable-pip-version-check --target "$BOARD/site" \
      "${PIP_PLATFORM[@]}" "apache-tvm==$TVM_VERSION" "apache-tvm-ffi==$TVM_FFI_VERSION" \
      numpy psutil cloudpickle tornado
fi
rm -rf "$BOARD"/site/ml_dtypes "$BOARD"/site/ml_dtypes-*  # apache-tvm's dependency; optional at run time

# 4. The lean runtime loads libtvm_runtime.so alone (FLUIDML_TVM_RUNTIME_LIB), never the compiler.
ln -sf ../site/tvm/lib/libtvm_runtime.so "$BOARD/lib/libtvm_runtime.so"

# 5. A host executable that runs the board's Python under QEMU.
cat >"$BOARD/python" <<EOS
#!/usr/bin/env bash
export PYTHONPATH="$BOARD/site\${PYTHONPATH:+:\$PYTHONPATH}"
export FLUIDML_TVM_RUNTIME_LIB="$BOARD/lib/libtvm_runtime.so"
export TVM_USE_RUNTIME_LIB=1
exec qemu-aarch64 -L "$BOARD/sysroot" "$BOARD/sysroot/usr/bin/python3.11" "\$@"
EOS
chmod +x "$BOARD/python"

# 6. What the board's Python starts through sys.executable (the RPC server's popen
#    workers) must run under QEMU too: the host kernel cannot exec the arm64 binary.
#    TVM in runtime-only mode does not load libtvm_runtime_extra.so, which has the random
#    fill MetaSchedule's measurements call on the device: the board loads it at start.
cat >"$BOARD/site/sitecustomize.py" <<EOS
import ctypes
import sys
sys.executable = "$BOARD/python"
for lib in ("tvm_ffi/lib/libtvm_ffi.so", "tvm/lib/libtvm_runtime.so", "tvm/lib/libtvm_runtime_extra.so"):
    ctypes.CDLL("$BOARD/site/" + lib, ctypes.RTLD_GLOBAL)
EOS

"$BOARD/python" -c 'import numpy, tvm_ffi, tornado, psutil, cloudpickle, platform, sys
print("board python:", platform.machine(), "sys.executable:", sys.executable)'
echo "$READY" >"$BOARD/READY"
echo "board ready: $BOARD"
