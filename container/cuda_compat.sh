# CUDA forward compatibility for SageMaker jobs: sourced by every non-interactive bash of the image
# (ENV BASH_ENV in container/Dockerfile), so it is in effect before the SageMaker SDK's sm_train.sh starts
# mpirun, whose `-x LD_LIBRARY_PATH` hands the result to every rank on every host.
#
# Why here: the AWS base runs this step in its ENTRYPOINT ([ENTRY] scripts/docker/tensorflow/entrypoint.sh,
# which calls [COMPAT] scripts/docker/common/start_cuda_compat.sh), but the SDK v3 sets ContainerEntrypoint
# (`/bin/bash -c "... sm_train.sh"`), so that entrypoint never runs. (Even where it does, it runs the script
# as a child `bash`, so its `export` does not reach the job.) The rule is [COMPAT]'s: when
# /usr/local/cuda/compat/libcuda.so.1 exists (the base's cuda-compat package; it links to
# libcuda.so.<max driver>) and the host's NVIDIA driver is older than that version, put
# /usr/local/cuda/compat first in LD_LIBRARY_PATH. No GPU or no compat package: nothing happens.
# Sources: aws/deep-learning-containers HEAD e0ecedea (2026-08-21).
if [ -z "${BERTLIB_CUDA_COMPAT_CHECKED:-}" ]; then
  export BERTLIB_CUDA_COMPAT_CHECKED=1
  _compat_file=/usr/local/cuda/compat/libcuda.so.1
  if [ -e "$_compat_file" ]; then
    _compat_max="$(readlink "$_compat_file" | cut -d. -f3-)"
    _driver="$(sed -n 's/^NVRM.*Kernel Module *\([0-9.]*\).*$/\1/p' /proc/driver/nvidia/version 2>/dev/null || true)"
    if [ -z "$_driver" ]; then
      _driver="$(nvidia-smi --query-gpu=driver_version --format=csv,noheader --id=0 2>/dev/null || true)"
    fi
    if [ -n "$_driver" ] && [ -n "$_compat_max" ] && [ "$_driver" != "$_compat_max" ] \
       && [ "$(printf '%s\n%s\n' "$_driver" "$_compat_max" | sort -V | head -n1)" = "$_driver" ]; then
      export LD_LIBRARY_PATH="/usr/local/cuda/compat${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
      echo "[bertlib] NVIDIA driver $_driver is older than CUDA's $_compat_max: CUDA forward compatibility on (/usr/local/cuda/compat first in LD_LIBRARY_PATH)" >&2
    fi
  fi
  unset _compat_file _compat_max _driver
fi
