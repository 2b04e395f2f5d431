#!/usr/bin/env bash
# Build the bertlib SageMaker training image locally, on a stand-in for the AWS TF 2.21 training DLC
# (which lives in AWS's private registry and cannot be pulled here). Run as root (make image):
#   1. start dockerd if needed                               (start_dockerd.sh)
#   2. bertlib/debian:bookworm: debootstrap minbase + docker import  (skipped when the image exists)
#   3. bertlib/tensorflow-training-standin:2.21 from container/standin/Dockerfile (with the AWS image's
#      Python packages: dlc-lock.txt, written by lock_to_requirements.py)
#   4. bertlib-training:local from container/Dockerfile on the stand-in, with the same small context as
#      container/build_and_push.sh (container/context.sh)
# Docker's layer cache makes a re-run fast.
#
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian),
# HOROVOD_GPU_OPERATIONS (default NCCL, as for AWS; empty = Horovod with MPI + Gloo only),
# EXTRA_CA_CERTS (auto | none | a directory of *.crt; auto: the build machine's
# /usr/local/share/ca-certificates/*.crt, used only when TLS to PyPI does not verify with the stock
# Mozilla CA set, i.e. a TLS-intercepting proxy), STANDIN_IMAGE (default
# bertlib/tensorflow-training-standin:2.21), IMAGE (default bertlib-training:local).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo_root="$(cd "$here/../.." && pwd)"
base_image=bertlib/debian:bookworm
standin_image="${STANDIN_IMAGE:-bertlib/tensorflow-training-standin:2.21}"
image="${IMAGE:-bertlib-training:local}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
horovod_gpu_operations="${HOROVOD_GPU_OPERATIONS-NCCL}"
extra_ca="${EXTRA_CA_CERTS:-auto}"

# The docker CLI here has no buildx plugin: use the classic builder explicitly (it also keeps the
# daemon-side layer cache that makes re-runs fast).
export DOCKER_BUILDKIT=0

say() { echo "[build.sh] $*"; }
timed() { local name="$1" t0=$SECONDS; shift; "$@"; say "$name: $((SECONDS - t0)) s"; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$here/start_dockerd.sh"

# --- 2. base image -------------------------------------------------------------------------------------
make_base() {
  command -v debootstrap >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap; }
  local rootfs="$work/rootfs"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; return 1; }
  tar -C "$rootfs" -c . | docker import - "$base_image" >/dev/null
  rm -rf "$rootfs"
}
if docker image inspect "$base_image" >/dev/null 2>&1; then
  say "$base_image exists"
else
  timed "base image $base_image" make_base
fi

# --- 3. stand-in ---------------------------------------------------------------------------------------
# The build machine's extra CA certificates go into the stand-in only when TLS to PyPI is intercepted.
needs_extra_ca() {
  local mozilla="$work/mozilla.pem" nocapath="$work/nocapath"
  cat /usr/share/ca-certificates/mozilla/*.crt >"$mozilla" 2>/dev/null || return 1
  mkdir -p "$nocapath"  # only the stock set: no /etc/ssl/certs directory, no CA variables
  ! env -u SSL_CERT_DIR -u SSL_CERT_FILE -u CURL_CA_BUNDLE curl -sS -o /dev/null --max-time 30 \
      --cacert "$mozilla" --capath "$nocapath" https://pypi.org/simple/pip/ 2>/dev/null
}
mkdir -p "$work/standin/ca"
cp "$here/Dockerfile" "$here/entrypoint.sh" "$here/dlc-lock.txt" "$here/install_lock.py" \
   "$repo_root/container/cuda/make_cuda_home.sh" "$work/standin/"
case "$extra_ca" in
  none) ;;
  auto) if needs_extra_ca; then
          say "TLS to PyPI is intercepted: the stand-in trusts /usr/local/share/ca-certificates/*.crt"
          cp /usr/local/share/ca-certificates/*.crt "$work/standin/ca/"
        fi ;;
  *) cp "$extra_ca"/*.crt "$work/standin/ca/" ;;
esac
touch "$work/standin/ca/.keep"

timed "stand-in $standin_image" docker build \
  --build-arg BASE_IMAGE="$base_image" \
  -t "$standin_image" "$work/standin"

# --- 4. the real image ---------------------------------------------------------------------------------
"$repo_root/container/context.sh" "$work/image"
timed "image $image" docker build \
  --build-arg BASE_IMAGE="$standin_image" \
  --build-arg HOROVOD_GPU_OPERATIONS="$horovod_gpu_operations" \
  -f "$work/image/container/Dockerfile" -t "$image" "$work/image"

docker images --format '{{.Repository}}:{{.Tag}}  {{.Size}}' \
  | grep -E "^($base_image|$standin_image|$image) " || true
