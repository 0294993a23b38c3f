#!/usr/bin/env bash
# Type-checks a TypeScript consumer of the package as published: packs it,
# installs the tarball into an empty project, and runs tsc there on
# consumer.ts (strict, NodeNext resolution). Needs `npm ci` in clients/js
# first (for tsc) and the npm registry (for protobufjs).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
js=$(cd "$here/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$js" && npm pack --silent --pack-destination "$tmp" >/dev/null)
cp "$here/consumer.ts" "$here/tsconfig.json" "$tmp/"
cd "$tmp"
printf '{ "name": "consumer", "private": true, "type": "module" }\n' > package.json
npm install --no-audit --no-fund --silent ./wspool-client-*.tgz
"$js/node_modules/.bin/tsc" -p tsconfig.json
echo "types: a TypeScript consumer of the packed package type-checks"
