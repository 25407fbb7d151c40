#!/usr/bin/env bash
# `npm start`: sets up what a fresh Debian machine lacks (packages, npm dependencies, the build),
# then runs the main job: the kiots2023 study at --quick scale from the shipped float model.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup-debian.sh
if [ ! -d node_modules ] || [ ! -f dist/src/cli/main.js ]; then
  npm install
elif [ ! -f native/build/Release/tinyquant.node ] && [ -f /usr/include/oneapi/dnnl/dnnl.hpp ]; then
  node scripts/build-native.mjs   # oneDNN arrived after the last install
fi
exec node dist/src/cli/main.js demo "$@"
