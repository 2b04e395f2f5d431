#!/usr/bin/env bash
# Assemble the small build context of container/Dockerfile into DIR (created if missing): only what the
# Dockerfile copies, since the repository holds .venv, runs/ and data, plus the build scripts themselves
# (build_and_push.sh, dlc_registry.sh, context.sh), so the context can also be built and pushed from a copy of
# it elsewhere. Used by container/build_and_push.sh and container/standin/build.sh.
#   container/context.sh DIR
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
here="$(cd "$(dirname "$0")" && pwd)"
repo_root="$(dirname "$here")"
context="$1"

mkdir -p "$context/container"
cp "$here/Dockerfile" "$here/install_horovod.sh" "$here/nccl_cu12.py" "$here/install_requirements.py" \
   "$here/system_packages.sh" "$here/cuda_compat.sh" "$here/bash_env.sh" "$here/dlc_registry.sh" "$here/build_and_push.sh" \
   "$here/context.sh" "$context/container/"
cp -r "$here/cuda" "$context/container/"
cp "$repo_root/requirements.txt" "$repo_root/pyproject.toml" "$repo_root/README.md" "$context/"
rm -rf "$context/bertlib"
(cd "$repo_root" && tar --exclude='__pycache__' --exclude='*.pyc' -cf - bertlib) | tar -xf - -C "$context"
