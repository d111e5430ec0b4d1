#!/usr/bin/env bash
# Installs the Debian packages the node's tests and tools use, when missing (idempotent, needs root).
set -euo pipefail
wanted=(dcmtk orthanc orthanc-dicomweb dicom3tools dcm2niix chromium chromium-driver postgresql make curl docker.io docker-compose debootstrap)
missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
command -v npm >/dev/null || missing+=(npm)  # fetches OHIF's viewer for the viewer tests (any npm will do)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
