#!/bin/bash
# The stand-in's entry point (ENTRYPOINT ["bash", "-m", ".../entrypoint.sh"], as the DLC's). The DLC's
# script (scripts/docker/tensorflow/entrypoint.sh) first sources its telemetry script if present and
# runs a CUDA forward-compatibility check (which prepends /usr/local/cuda/compat to LD_LIBRARY_PATH on
# hosts with an older NVIDIA driver), then execs the command. The stand-in has neither telemetry nor
# compat libraries, so only the exec remains. SageMaker jobs replace the entry point anyway: the SDK's
# request sets ContainerEntrypoint.
exec "$@"
