#!/usr/bin/env bash
# `npm start`: sets up what a fresh Debian machine lacks (packages, npm dependencies, the build),
# then runs the main job: the kiots2023 study at --quick scale from the shipped float model.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup-debian.sh
if [ ! -d node_modules ]; then
  ONNXRUNTIME_NODE_INSTALL=skip npm install   # its postinstall would fetch CUDA libraries otherwise
fi
if [ ! -f native/build/Release/tinyquant.node ]; then
  node scripts/build-native.mjs   # one line and the js backend when oneDNN or a compiler is missing
fi
if [ ! -f dist/src/cli/main.js ]; then
  npm run build
fi
exec node dist/src/cli/main.js demo "$@"
