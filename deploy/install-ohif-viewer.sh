#!/usr/bin/env bash
# Installs OHIF's prebuilt viewer (npm package @ohif/app, its dist/) for the real-viewer tests.
# Idempotent and offline-safe once installed: the unpacked dist/ is kept in a version-named cache folder.
set -euo pipefail
version="${OHIF_VERSION:-3.13.2}"
cache="${PSMA_OHIF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/psma-node/ohif}"
target="$cache/$version"
if [ -f "$target/dist/index.html" ]; then
  exit 0
fi
if ! command -v npm >/dev/null; then
  echo "npm not found: skipping OHIF viewer (the viewer tests will be skipped)"
  exit 0
fi
mkdir -p "$cache"
work="$(mktemp -d "$cache/.download.XXXXXX")"
trap 'rm -rf "$work"' EXIT
echo "downloading @ohif/app@$version into $target"
(cd "$work" && npm pack --silent "@ohif/app@$version" >/dev/null)
tar -xzf "$work"/ohif-app-"$version".tgz -C "$work" package/dist
test -f "$work/package/dist/index.html"
rm -rf "$target"
mkdir -p "$target"
mv "$work/package/dist" "$target/dist"
