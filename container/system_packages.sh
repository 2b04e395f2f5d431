#!/usr/bin/env bash
# Install the system packages container/Dockerfile needs on top of its base image, only those missing:
# a C++ compiler, make and cmake (to build Horovod), and sshd/ssh/ssh-keygen (the SageMaker SDK's MPI
# driver starts /usr/sbin/sshd -D and reaches the other hosts over ssh). With dnf where dnf exists (the
# AWS DLC base, Amazon Linux 2023, which already has all of them), with apt-get otherwise (Debian).
set -euo pipefail

# what must exist   dnf package       apt package
needs=(
  "g++              gcc-c++           g++"
  "make             make              make"
  "cmake            cmake             cmake"
  "/usr/sbin/sshd   openssh-server    openssh-server"
  "ssh              openssh-clients   openssh-client"
  "ssh-keygen       openssh-clients   openssh-client"
)

if command -v dnf >/dev/null 2>&1; then col=2
elif command -v apt-get >/dev/null 2>&1; then col=3
else echo "error: neither dnf nor apt-get found" >&2; exit 1
fi

missing=()
for line in "${needs[@]}"; do
  read -r what dnf_pkg apt_pkg <<<"$line"
  command -v "$what" >/dev/null 2>&1 && continue
  pkg="$([ "$col" = 2 ] && echo "$dnf_pkg" || echo "$apt_pkg")"
  [[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "system_packages: all present"
  exit 0
fi
echo "system_packages: installing ${missing[*]}"
if [ "$col" = 2 ]; then
  dnf install -y --setopt=install_weak_deps=False "${missing[@]}"
  dnf clean all && rm -rf /var/cache/dnf
else
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
  rm -rf /var/lib/apt/lists/*
fi
