#!/usr/bin/env bash
# Build Horovod 0.28.1 against the TensorFlow already installed in the active Python.
#
# Used by the Makefile (local venv, Gloo only unless mpirun exists) and by container/Dockerfile
# (SageMaker image: NCCL + MPI + TensorFlow). Horovod 0.28.1 is the last release and has no wheels;
# against TF 2.21 its build misses three headers, fixed here in turn (see README "Troubleshooting"):
#   highwayhash/arch_specific.h, farmhash.h   -> TF's bundled external/ include dirs
#   tensorflow/compiler/xla/client/xla_builder.h -> a one-line shim forwarding to xla/hlo/builder/
# and its GPU-only code (compiled with HOROVOD_GPU_OPERATIONS) needs two source patches, applied to the
# sha256-pinned sdist below (they touch only `#if HAVE_GPU` code, so the CPU build is unchanged):
#   xla_mpi_ops.cc  xla::StatusOr                      -> absl::StatusOr (TF 2.21 has no xla::StatusOr)
#   mpi_ops.cc      stream_executor::gpu::AsGpuStreamValue (declared by Horovod, no longer exported by
#                   TF) -> an inline helper reading Stream::platform_specific_handle().stream
#
# Environment: PYTHON (default: python), HOROVOD_GPU_OPERATIONS (e.g. NCCL in the container); with it:
#   HOROVOD_CUDA_HOME          CUDA toolkit with bin/nvcc (default /usr/local/cuda). If its nvcc is missing
#                              or cannot target every architecture below, a CUDA home is assembled from
#                              PyPI's CUDA 12.9 wheels + Debian's CUDA 11.8 compiler: container/cuda/make_cuda_home.sh
#   HOROVOD_BUILD_CUDA_CC_LIST device code to build (default 70,80,90: V100, A100, H100; PTX for the last)
#   HOROVOD_NCCL_HOME          NCCL, linked shared. Default with NCCL: $NCCL_CU12_HOME, which
#                              container/nccl_cu12.py prepare makes the nvidia-nccl-cu12 wheel's NCCL, checked
#                              by the sha256 in its RECORD (the base's nvidia-nccl-cu13 overwrites the same
#                              nvidia/nccl/lib/libnccl.so.2; then a private copy of the cu12 wheel is used)
#   NCCL_CU12_HOME             where (default: $PYTHON's sys.prefix/nccl-cu12; the image: /opt/bertlib/nccl-cu12,
#                              first on its LD_LIBRARY_PATH so that it is also the one loaded)
set -euo pipefail

PYTHON="${PYTHON:-python}"
[ -n "${HOROVOD_GPU_OPERATIONS:-}" ] || unset HOROVOD_GPU_OPERATIONS   # empty = no GPU operations
HOROVOD_VERSION="${HOROVOD_VERSION:-0.28.1}"
HOROVOD_SHA256="${HOROVOD_SHA256:-92a43f5a94c43907a56805bad15f19700c62ffc83b7ca483f9e104e229f67ef0}"  # PyPI sdist
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if "$PYTHON" -c "import horovod.tensorflow as h, sys; sys.exit(0 if h.__version__ == '$HOROVOD_VERSION' else 1)" 2>/dev/null; then
  echo "horovod $HOROVOD_VERSION already built against this TensorFlow"
  horovodrun --check-build
  exit 0
fi

TF_INCLUDE="$("$PYTHON" -c 'import tensorflow as tf; print(tf.sysconfig.get_include())' 2>/dev/null)"
SHIM="$(mktemp -d)"
trap 'rm -rf "$SHIM"' EXIT
mkdir -p "$SHIM/tensorflow/compiler/xla/client"
echo '#include "xla/hlo/builder/xla_builder.h"' > "$SHIM/tensorflow/compiler/xla/client/xla_builder.h"

export CPLUS_INCLUDE_PATH="$SHIM:$TF_INCLUDE/external/highwayhash:$TF_INCLUDE/external/farmhash_archive/src${CPLUS_INCLUDE_PATH:+:$CPLUS_INCLUDE_PATH}"
export CMAKE_POLICY_VERSION_MINIMUM=3.5
export HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 HOROVOD_WITH_GLOO=1
if command -v mpirun >/dev/null 2>&1; then
  export HOROVOD_WITH_MPI=1
else
  export HOROVOD_WITHOUT_MPI=1
fi
export MAKEFLAGS="-j$(nproc)"

if [ -n "${HOROVOD_GPU_OPERATIONS:-}" ]; then
  export HOROVOD_BUILD_CUDA_CC_LIST="${HOROVOD_BUILD_CUDA_CC_LIST:-70,80,90}"
  export HOROVOD_CUDA_HOME="${HOROVOD_CUDA_HOME:-/usr/local/cuda}"
  NVCC_ARCHS="$("$HOROVOD_CUDA_HOME/bin/nvcc" --list-gpu-arch 2>/dev/null | tr '\n' ' ' || true)"
  for cc in ${HOROVOD_BUILD_CUDA_CC_LIST//,/ }; do
    if [[ " $NVCC_ARCHS " != *" compute_$cc "* ]]; then
      echo "install_horovod.sh: no nvcc for compute_$cc in $HOROVOD_CUDA_HOME; assembling one (container/cuda/make_cuda_home.sh)"
      PYTHON="$PYTHON" bash "$HERE/cuda/make_cuda_home.sh" "$SHIM/cuda" ${HOROVOD_CUDA_DEB:+"$HOROVOD_CUDA_DEB"}
      export HOROVOD_CUDA_HOME="$SHIM/cuda"
      break
    fi
  done
  # Horovod asks `nvcc` on PATH before $HOROVOD_CUDA_HOME/bin/nvcc: make both the same.
  export PATH="$HOROVOD_CUDA_HOME/bin:$PATH"
  if [ -z "${HOROVOD_NCCL_HOME:-}" ] && [[ "$HOROVOD_GPU_OPERATIONS" == NCCL ]]; then
    NCCL_CU12_HOME="${NCCL_CU12_HOME:-$("$PYTHON" -c 'import sys; print(sys.prefix)')/nccl-cu12}"
    HOROVOD_NCCL_HOME="$("$PYTHON" "$HERE/nccl_cu12.py" prepare "$NCCL_CU12_HOME")"
    export HOROVOD_NCCL_HOME HOROVOD_NCCL_LINK="${HOROVOD_NCCL_LINK:-SHARED}"
  fi
  if [ -n "${HOROVOD_NCCL_HOME:-}" ] && [ -e "$HOROVOD_NCCL_HOME/lib/libnccl.so.2" ] && [ ! -e "$HOROVOD_NCCL_HOME/lib/libnccl.so" ]; then
    ln -s libnccl.so.2 "$HOROVOD_NCCL_HOME/lib/libnccl.so"  # the wheel has no unversioned link for the linker
  fi
fi

# The pinned sdist, verified, patched for TF 2.21, built in place.
"$PYTHON" -m pip download --no-cache-dir --no-deps --no-binary :all: --no-build-isolation \
  -d "$SHIM/sdist" "horovod==$HOROVOD_VERSION" >/dev/null
echo "$HOROVOD_SHA256  $SHIM/sdist/horovod-$HOROVOD_VERSION.tar.gz" | sha256sum -c -
tar -xzf "$SHIM/sdist/horovod-$HOROVOD_VERSION.tar.gz" -C "$SHIM/sdist"
SRC="$SHIM/sdist/horovod-$HOROVOD_VERSION"
"$PYTHON" - "$SRC" <<'PATCH'
import pathlib, sys
src = pathlib.Path(sys.argv[1]) / "horovod" / "tensorflow"
def patch(name, old, new, count):
    path = src / name
    text = path.read_text()
    assert text.count(old) == count, f"{path}: expected {count} x {old!r}"
    path.write_text(text.replace(old, new))
patch("xla_mpi_ops.cc", "::xla::StatusOr<", "::absl::StatusOr<", 2)
patch("mpi_ops.cc", """\
// Forward declaration of AsGpuStreamValue
namespace stream_executor {
namespace gpu {
GpuStreamHandle AsGpuStreamValue(Stream* stream);
} // namespace stream_executor
} // namespace gpu
#if TENSORFLOW_VERSION >= 2011000000
#include "tensorflow/compiler/xla/stream_executor/stream.h"
#else
#include "tensorflow/stream_executor/stream.h"
#endif // TENSORFLOW_VERSION >= 2011000000
""", """\
// TF 2.21 does not export stream_executor::gpu::AsGpuStreamValue: read the native stream from
// Stream::platform_specific_handle() instead.
#include "xla/stream_executor/stream.h"
namespace stream_executor {
namespace gpu {
inline GpuStreamHandle AsGpuStreamValue(Stream* stream) {
  return static_cast<GpuStreamHandle>(stream->platform_specific_handle().stream);
}
} // namespace gpu
} // namespace stream_executor
""", 1)
PATCH

"$PYTHON" -m pip install --no-cache-dir --no-build-isolation "$SRC"
horovodrun --check-build
