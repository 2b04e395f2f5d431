#!/usr/bin/env bash
# Assemble a CUDA home (DEST/bin/nvcc, DEST/include, DEST/lib64) that builds Horovod's CUDA kernels for
# sm_70, sm_80 and sm_90 on a machine without a CUDA toolkit: used by install_horovod.sh when
# HOROVOD_CUDA_HOME has no nvcc that targets the requested architectures (the AWS image has a real
# CUDA 12.9 in /usr/local/cuda and never comes here).
#
#   headers, cudart, ptxas  CUDA 12.9 from the PyPI wheels already installed in $PYTHON:
#                           nvidia-cuda-runtime-cu12==12.9.*, nvidia-cuda-nvcc-cu12==12.9.86 (ptxas,
#                           crt/ headers), nvidia-cuda-cccl-cu12==12.9.* (nv/target, cub, thrust)
#   nvcc driver, cudafe++,  CUDA 11.8 from Debian bookworm's non-free `nvidia-cuda-toolkit` .deb, only
#   cicc, fatbinary,        unpacked (never installed: its dependencies would pull ~120 packages, libcuda1
#   nvlink, libdevice       among them). PyPI's cu12 nvcc wheel has no nvcc driver, CUDA 13 cannot target
#                           sm_70, and CUDA 11.8 is the newest toolkit that Debian bookworm ships.
#
# So the device front end is CUDA 11.8 (cicc emits PTX ISA 7.8) and ptxas 12.9 turns that PTX into the
# sm_70/sm_80/sm_90 cubins; the host side sees only the CUDA 12.9 headers and runtime. nvcc is wrapped
# with `-cudadevrt none`: nvlink 11.8 rejects the 12.9 libcudadevrt.a ("newer than toolkit"), and
# nothing here uses relocatable device code / dynamic parallelism.
#
# Usage: PYTHON=python bash make_cuda_home.sh DEST [nvidia-cuda-toolkit_11.8*.deb]
# Without the .deb argument it runs `apt-get download nvidia-cuda-toolkit`, which needs the `contrib
# non-free` components in the apt sources (and an `apt-get update` after adding them).
set -euo pipefail

DEST="${1:?usage: make_cuda_home.sh DEST [nvidia-cuda-toolkit.deb]}"
DEB="${2:-}"
PYTHON="${PYTHON:-python}"

wheel_dir() {  # directory of an installed nvidia.* namespace package, e.g. cuda_runtime
  "$PYTHON" -c "import nvidia.$1 as m; print(list(m.__path__)[0])" 2>/dev/null || {
    echo "make_cuda_home.sh: nvidia.$1 not importable from $PYTHON; pip install $2" >&2; exit 1; }
}
RT="$(wheel_dir cuda_runtime 'nvidia-cuda-runtime-cu12==12.9.*')"
NVCC_WHL="$(wheel_dir cuda_nvcc 'nvidia-cuda-nvcc-cu12==12.9.86')"
CCCL="$(wheel_dir cuda_cccl 'nvidia-cuda-cccl-cu12==12.9.*')"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
if [ -z "$DEB" ]; then
  (cd "$WORK" && apt-get download nvidia-cuda-toolkit >/dev/null)
  DEB="$(ls "$WORK"/nvidia-cuda-toolkit_*.deb)"
fi
case "$(dpkg-deb -f "$DEB" Version)" in
  11.8.*) ;;
  *) echo "make_cuda_home.sh: $DEB is not CUDA 11.8 (Debian bookworm's nvidia-cuda-toolkit)" >&2; exit 1 ;;
esac
dpkg-deb -x "$DEB" "$WORK/deb"
T="$WORK/deb/usr/lib/nvidia-cuda-toolkit"

rm -rf "$DEST"
mkdir -p "$DEST/bin" "$DEST/nvvm/bin" "$DEST/include" "$DEST/lib64"
cp -a "$T/bin/nvcc" "$DEST/bin/nvcc.bin"
cp -a "$T/bin/crt" "$DEST/bin/"
cp -a "$WORK/deb/usr/bin/cudafe++" "$WORK/deb/usr/bin/fatbinary" "$WORK/deb/usr/bin/nvlink" \
      "$WORK/deb/usr/bin/bin2c" "$WORK/deb/usr/bin/cuobjdump" "$DEST/bin/"
cp -a "$T/bin/cicc" "$DEST/nvvm/bin/"
cp -a "$T/libdevice" "$DEST/nvvm/libdevice"   # read by cicc 11.8 (12.9's bitcode is newer than it)
cp -a "$NVCC_WHL/bin/ptxas" "$DEST/bin/ptxas"
# CUDA 12.9 headers: runtime + nvcc's crt/ + CCCL (nv/target is needed by cuda_fp16.h).
cp -a "$RT/include/." "$NVCC_WHL/include/." "$CCCL/include/." "$DEST/include/"
rm -rf "$DEST/include/__init__.py" "$DEST/include/__pycache__"
cp -a "$RT/lib/." "$DEST/lib64/"
rm -rf "$DEST/lib64/__init__.py" "$DEST/lib64/__pycache__"
ln -sf libcudart.so.12 "$DEST/lib64/libcudart.so"

cat > "$DEST/bin/nvcc.profile" <<'EOF'
TOP              = $(_HERE_)/..
NVVMIR_LIBRARY_DIR = $(TOP)/nvvm/libdevice
LD_LIBRARY_PATH += $(TOP)/lib64:
PATH            += $(TOP)/nvvm/bin:$(_HERE_):
INCLUDES        +=  "-I$(TOP)/include" $(_SPACE_)
LIBRARIES        =+ $(_SPACE_) "-L$(TOP)/lib64"
CUDAFE_FLAGS    +=
PTXAS_FLAGS     +=
EOF
cat > "$DEST/bin/nvcc" <<'EOF'
#!/bin/sh
# CUDA 11.8 nvcc driver over CUDA 12.9 headers/cudart/ptxas (see container/cuda/make_cuda_home.sh).
exec "$(dirname "$0")/nvcc.bin" -cudadevrt none "$@"
EOF
chmod +x "$DEST/bin/nvcc"

"$DEST/bin/nvcc" --version | tail -n 1
"$DEST/bin/ptxas" --version | tail -n 1
