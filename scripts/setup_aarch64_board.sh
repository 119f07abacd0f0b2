#!/usr/bin/env bash
# Set up an emulated aarch64 board: user-mode QEMU, an arm64 Debian sysroot with
# Python 3.11, and the deploy-side Python packages (numpy, apache-tvm-ffi) plus
# the one file the lean runtime needs from the apache-tvm wheel, libtvm_runtime.so.
# Idempotent: every step is skipped when its output is already in the cache.
#
#   scripts/setup_aarch64_board.sh            # set up (needs root for apt-get)
#   $BOARD/python -c 'import numpy'           # run a Python on the board
#
# Layout of $BOARD (default ~/.cache/fluidml-tvm/aarch64):
#   debs/      arm64 .deb files        sysroot/  their contents (dpkg -x)
#   wheels/    the apache-tvm wheel    site/     PYTHONPATH of the board
#   lib/libtvm_runtime.so              python    host wrapper running the board's python
#   READY      written last; its presence means the board is usable
set -euo pipefail

BOARD="${FLUIDML_AARCH64_BOARD:-$HOME/.cache/fluidml-tvm/aarch64}"
TVM_VERSION=0.27.0.post1
TVM_FFI_VERSION=0.1.14.post1
HOST_PYTHON="${PYTHON:-$(dirname "$0")/../.venv/bin/python}"
[ -x "$HOST_PYTHON" ] || HOST_PYTHON=python3
PIP_PLATFORM=(--platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64
              --platform manylinux2014_aarch64 --python-version 3.11
              --implementation cp --only-binary=:all:)

if [ -f "$BOARD/READY" ]; then
  echo "board ready: $BOARD"
  exit 0
fi
mkdir -p "$BOARD"/{debs,sysroot,wheels,site,lib}

# 1. Host tools: the emulator and the cross linker TVM's export_library calls.
if ! command -v qemu-aarch64 >/dev/null || ! command -v aarch64-linux-gnu-gcc >/dev/null; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user gcc-aarch64-linux-gnu
fi

# 2. arm64 Python and every library it links, unpacked into one sysroot.
if [ ! -x "$BOARD/sysroot/usr/bin/python3.11" ]; then
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
  fi
  apt-get update -q
  # The dependency closure of Python, arm64 packages only; dpkg/tar are not needed.
  mapfile -t pkgs < <(apt-cache depends --recurse --no-recommends --no-suggests \
      --no-conflicts --no-breaks --no-replaces --no-enhances \
      python3.11-minimal:arm64 libpython3.11-stdlib:arm64 libstdc++6:arm64 \
      | grep -E '^[a-z0-9].*:arm64$' | grep -vE '^(dpkg|tar|install-info):' | sort -u)
  (cd "$BOARD/debs" && apt-get download -q "${pkgs[@]}")
  for deb in "$BOARD"/debs/*.deb; do dpkg -x "$deb" "$BOARD/sysroot"; done
fi

# 3. Deploy-side Python packages for the board (aarch64 wheels).
if [ ! -d "$BOARD/site/tvm_ffi" ]; then
  "$HOST_PYTHON" -m pip install -q --target "$BOARD/site" "${PIP_PLATFORM[@]}" \
      "apache-tvm-ffi==$TVM_FFI_VERSION" numpy
fi

# 4. libtvm_runtime.so from the aarch64 apache-tvm wheel; the compiler stays out.
if [ ! -f "$BOARD/lib/libtvm_runtime.so" ]; then
  "$HOST_PYTHON" -m pip download -q --no-deps -d "$BOARD/wheels" "${PIP_PLATFORM[@]}" \
      "apache-tvm==$TVM_VERSION"
  unzip -o -j -q "$BOARD"/wheels/apache_tvm-*.whl tvm/lib/libtvm_runtime.so -d "$BOARD/lib"
fi

# 5. A host executable that runs the board's Python under QEMU.
cat >"$BOARD/python" <<EOF
#!/usr/bin/env bash
export PYTHONPATH="$BOARD/site\${PYTHONPATH:+:\$PYTHONPATH}"
export FLUIDML_TVM_RUNTIME_LIB="$BOARD/lib/libtvm_runtime.so"
exec qemu-aarch64 -L "$BOARD/sysroot" "$BOARD/sysroot/usr/bin/python3.11" "\$@"
EOF
chmod +x "$BOARD/python"

"$BOARD/python" -c 'import numpy, tvm_ffi, platform; print("board python:", platform.machine())'
echo "tvm=$TVM_VERSION tvm_ffi=$TVM_FFI_VERSION" >"$BOARD/READY"
echo "board ready: $BOARD"
