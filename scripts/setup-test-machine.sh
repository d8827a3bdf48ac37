#!/usr/bin/env bash
# Installs the programs the integration tests start and talk to, on Debian or Ubuntu (apt-get). The
# unit tests (`bun test test/unit`) need none of them. Run as root, or with sudo available.
set -euo pipefail
cd "$(dirname "$0")/.."

# docker-registry: a real OCI registry; apache2-utils: htpasswd; podman + uidmap: images and the Docker
# API behind the docker CLI; skopeo: the independent client that pulls back what we pushed; zstd, gzip,
# tar: checking layers; openssl: token-auth keys and test CAs; umoci: multi-platform test images; nginx: a
# body-limit proxy; docker.io: a private dockerd 20.10 (and its /usr/bin/docker) per test; time:
# /usr/bin/time -v for peak memory.
packages=(docker-registry apache2-utils podman uidmap skopeo zstd gzip tar openssl ca-certificates umoci nginx time)
{ [ -x /usr/sbin/dockerd ] && [ -x /usr/bin/docker ]; } || packages+=(docker.io)

missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
install_deps() {
  # The project's own packages too, so `bun run setup` then `bun test` is all a new clone needs.
  if command -v bun >/dev/null && [ -f package.json ]; then bun install --frozen-lockfile; fi
}

if [ ${#missing[@]} -eq 0 ]; then
  echo "Every program the tests need is installed."
  install_deps
  exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "Installing ${missing[*]} needs root: run this as root or install sudo." >&2; exit 1; }
  sudo=(sudo)
fi
echo "Installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "Installed: ${missing[*]}"
install_deps
