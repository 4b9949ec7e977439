#!/usr/bin/env bash
# Debian packages the tests need, installed only when missing (idempotent; `make test` runs it).
# Add yours to PACKAGES with a comment saying which tests need it.
set -euo pipefail

PACKAGES=(
  # The end-to-end browser test (tests/governance/test_e2e_browser.py).
  chromium
  # promtool checks and unit-tests the alert rules (tests/deploy/).
  prometheus
  # The load balancer in front of the instances (tests/chaos/test_run.py, make chaos).
  haproxy
  # Redis Sentinel: the failover tests start three (tests/core/test_redis_sentinel.py) and the
  # chaos harness runs its Redis behind them.
  redis-sentinel
  # Network faults of the chaos harness (chaos/netns.py) and the timeout tests
  # (tests/core/test_network_bounds.py): DROP rules inside network namespaces they create, and
  # `ip netns` / veth pairs / a bridge (iproute2).
  iptables
  iproute2
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "Missing Debian packages: ${missing[*]} (run this script as root to install them)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Other checkouts on this machine may be installing at the same time: wait for dpkg's lock.
apt-get -o DPkg::Lock::Timeout=600 update -q
apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"
