#!/usr/bin/env bash
# Mesa's lavapipe (a Vulkan device on the CPU) and the Vulkan loader, on Debian as root: from
# bookworm-backports on Debian 12 (Mesa 25; Dawn rejects bookworm's Mesa 22.3), else the release's own.
# Used by setup_webgpu.sh (Dawn runs on it) and install_target_deps.sh (the Vulkan checks).
set -euo pipefail
. /etc/os-release
release=()
if [ "${VERSION_CODENAME:-}" = bookworm ]; then
  list=/etc/apt/sources.list.d/bookworm-backports.sources
  if ! [ -f "$list" ]; then
    printf '%s\n' "Types: deb" "URIs: http://deb.debian.org/debian" "Suites: bookworm-backports" \
      "Components: main" "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" > "$list"
    apt-get update -qq
  fi
  release=(-t bookworm-backports)
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${release[@]}" \
  mesa-vulkan-drivers libvulkan1 >/dev/null
