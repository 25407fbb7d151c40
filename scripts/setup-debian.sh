#!/usr/bin/env bash
# Installs the Debian packages tinyquant uses that this machine lacks.
#   scripts/setup-debian.sh          what `npm start` needs: a C++ toolchain and oneDNN for the native backend
#   scripts/setup-debian.sh --all    also what the tests use: PyTorch (comparisons), the ARM cross-compiler
#                                    and emulator (device code), Chromium (report check), Fashion-MNIST,
#                                    redis-server (grids on a BullMQ queue; the tests start their own), cmake
#                                    (the C export's build files)
# Without root or sudo it says what is missing and exits 0: tinyquant still works on its js backend.
set -euo pipefail

packages=(g++ make python3 libdnnl-dev)
if [ "${1:-}" = "--all" ]; then
  packages+=(python3-torch python3-torchvision gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm
    chromium dataset-fashion-mnist redis-server cmake)
fi

missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then sudo=""
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo"
else
  echo "tinyquant: missing Debian packages: ${missing[*]} (install them as root: apt-get install ${missing[*]})"
  exit 0
fi
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
