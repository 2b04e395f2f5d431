#!/usr/bin/env bash
# Build the bertlib SageMaker training image and push it to ECR.
#
#   container/build_and_push.sh [TAG]         (default TAG: tf2.21-<git short sha or "dev">)
#
# Environment: AWS_REGION / AWS_DEFAULT_REGION (else `aws configure get region`), REPOSITORY (default
# bertlib-training), DLC_REGISTRY (default: the AWS Deep Learning Containers registry of the region,
# container/dlc_registry.sh; the Dockerfile's FROM is taken from it). Needs docker and the AWS CLI v2 with
# credentials for ECR. Prints the image URI to use as BERTLIB_IMAGE_URI.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo_root="$(dirname "$here")"
region="${AWS_REGION:-${AWS_DEFAULT_REGION:-$(aws configure get region || true)}}"
[ -n "$region" ] || { echo "error: set AWS_REGION (no region configured)" >&2; exit 2; }
repository="${REPOSITORY:-bertlib-training}"
dlc_registry="${DLC_REGISTRY:-$("$here/dlc_registry.sh" "$region")}"
sha="$(git -C "$repo_root" rev-parse --short HEAD 2>/dev/null || echo dev)"
tag="${1:-tf2.21-$sha}"

account="$(aws sts get-caller-identity --query Account --output text)"
registry="$account.${dlc_registry#*.}"  # same host scheme as the region's DLC registry (.com.cn in China)
image="$registry/$repository:$tag"

# The base image lives in the AWS DLC registry: log in there to pull, and to our registry to push.
aws ecr get-login-password --region "$region" \
  | docker login --username AWS --password-stdin "$dlc_registry"
aws ecr get-login-password --region "$region" | docker login --username AWS --password-stdin "$registry"

if ! aws ecr describe-repositories --region "$region" --repository-names "$repository" >/dev/null 2>&1; then
  aws ecr create-repository --region "$region" --repository-name "$repository" \
    --image-scanning-configuration scanOnPush=true >/dev/null
  echo "created ECR repository $repository"
fi

# A small build context: only what the Dockerfile copies (the repository holds .venv, runs/, data).
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
"$here/context.sh" "$context"

docker build --build-arg DLC_REGISTRY="$dlc_registry" -f "$context/container/Dockerfile" -t "$repository:$tag" "$context"
docker tag "$repository:$tag" "$image"
docker push "$image"
echo "pushed $image"
echo "export BERTLIB_IMAGE_URI=$image"
