#!/usr/bin/env bash
# Debian packages the tests need, installed only when missing (idempotent; `make test` runs it).
# Each helper appends its packages to PACKAGES.
set -euo pipefail

PACKAGES=(
  # chaos harness (issue 9): the load balancer in front of the instances
  haproxy
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
