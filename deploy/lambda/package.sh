#!/usr/bin/env bash
# Packages masq's Lambda handler (src/ingest/lambda-handler.ts) as dist/masq-lambda.zip, for the nodejs22.x or nodejs24.x
# runtime with the handler `dist/lambda/index.handler`. Run it from a checkout after `npm ci`.
#
# The zip holds one ESM bundle made by esbuild (under a megabyte, no node_modules) and the SQL migrations, which
# the bundle reads at a cold start from ../../migrations relative to itself. docs/deploy.md has the rest.
set -euo pipefail
cd "$(dirname "$0")/../.."

ESBUILD_VERSION=0.25.12
stage=dist/lambda-package
rm -rf "$stage" dist/masq-lambda.zip
mkdir -p "$stage/dist/lambda"

# pg-native and pg-cloudflare are optional drivers pg loads only when asked to (native bindings, Cloudflare
# Workers); the banner gives the CommonJS dependencies the `require` an ES module lacks, importing createRequire under
# a name of its own (the bundle imports it too, for log.ts: the same name twice does not load).
npx -y "esbuild@$ESBUILD_VERSION" src/ingest/lambda-handler.ts \
  --bundle --platform=node --target=node22 --format=esm \
  --outfile="$stage/dist/lambda/index.mjs" \
  --external:pg-native --external:pg-cloudflare \
  --banner:js="import { createRequire as masqBannerRequire } from 'node:module'; const require = masqBannerRequire(import.meta.url);" \
  --log-level=warning
cp -R migrations "$stage/migrations"
(cd "$stage" && zip -qr ../masq-lambda.zip .)
rm -rf "$stage"
echo "dist/masq-lambda.zip ($(du -h dist/masq-lambda.zip | cut -f1)): handler dist/lambda/index.handler"
