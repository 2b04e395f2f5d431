# Sourced by every non-interactive bash of the image (ENV BASH_ENV in container/Dockerfile), the SageMaker
# SDK's `/bin/bash -c "chmod +x .../sm_train.sh && .../sm_train.sh"` (the container's PID 1) included.
# 1. CUDA forward compatibility (bertlib-cuda-compat.sh).
# 2. That SDK command runs under bertlib's init (bertlib/launch/sm_init.py) instead: the bash is replaced by
#    `python3 -m bertlib.launch.sm_init /bin/bash -c "<the same command>"`, which passes SageMaker's stop
#    (SIGTERM) on to the training ranks of this host and leaves a failing rank's error line in
#    /opt/ml/output/failure. BERTLIB_SM_INIT (set by the init for its child) keeps it to once.
. /usr/local/bin/bertlib-cuda-compat.sh
if [ -z "${BERTLIB_SM_INIT:-}" ] && [[ "${BASH_EXECUTION_STRING:-}" == *sm_drivers/sm_train.sh* ]] \
   && command -v python3 >/dev/null 2>&1; then
  exec python3 -m bertlib.launch.sm_init /bin/bash -c "$BASH_EXECUTION_STRING"
fi
