#!/usr/bin/env bash
# Build Horovod 0.28.1 against the TensorFlow already installed in the active Python.
#
# Used by the Makefile (local venv, Gloo only unless mpirun exists) and by container/Dockerfile
# (SageMaker image: NCCL + MPI + TensorFlow). Horovod 0.28.1 is the last release and has no wheels;
# against TF 2.21 its build misses three headers, fixed here in turn (see README "Troubleshooting"):
#   highwayhash/arch_specific.h, farmhash.h   -> TF's bundled external/ include dirs
#   tensorflow/compiler/xla/client/xla_builder.h -> a one-line shim forwarding to xla/hlo/builder/
#
# Environment: PYTHON (default: python), HOROVOD_GPU_OPERATIONS (e.g. NCCL in the container).
set -euo pipefail

PYTHON="${PYTHON:-python}"
HOROVOD_VERSION="${HOROVOD_VERSION:-0.28.1}"

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

"$PYTHON" -m pip install --no-cache-dir --no-build-isolation "horovod==$HOROVOD_VERSION"
horovodrun --check-build
