#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine that already has
# the Rust toolchain (run as root, as CI and the dev machines do).
#
# Idempotent: every step first checks whether its work is already done, so a
# second run takes about a second and prints nothing.
# Quiet on success, loud on failure: each step's output goes to a log that is
# printed in full only when the step fails.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
interop_dir="$repo_root/tests/interop"
log_dir="$(mktemp -d)"
trap 'rm -rf "$log_dir"' EXIT

# Runs one named step with its output captured; on failure prints that output
# and exits non-zero so the caller (scripts/test.sh, CI) stops here.
step() {
    local name="$1"
    shift
    local log="$log_dir/$name.log"
    if ! "$@" >"$log" 2>&1; then
        echo "setup.sh: step '$name' FAILED; its output:" >&2
        sed 's/^/  | /' "$log" >&2
        exit 1
    fi
}

# apt-get update runs at most once per setup.sh run, and only when a package
# is actually missing: it is the slow part and needs the network.
apt_updated=0
apt_install() {
    if [ "$apt_updated" -eq 0 ]; then
        step apt-update env DEBIAN_FRONTEND=noninteractive apt-get update -q
        apt_updated=1
    fi
    step "apt-install-$1" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "$@"
}

# --- Rust toolchain components used by scripts/test.sh ----------------------
# They cannot be fetched here (no rustup server), so only check and explain.
for component in fmt clippy; do
    if ! cargo "$component" --version >/dev/null 2>&1; then
        echo "setup.sh: 'cargo $component' is missing; install it with" \
            "'rustup component add ${component/fmt/rustfmt}'" >&2
        exit 1
    fi
done

# --- Node.js (the interop suite runs on node:test, Node >= 20) ---------------
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
    echo "setup.sh: Node.js >= 20 is required by tests/interop, found $(node --version)" >&2
    exit 1
fi

# --- openssl (tests/interop/tls.test.mjs makes its certificate with it) -------
if ! command -v openssl >/dev/null 2>&1; then
    apt_install openssl
fi

# --- Redis (cluster tests through Redis pub/sub) -----------------------------
if ! command -v redis-server >/dev/null 2>&1; then
    apt_install redis-server
fi

# --- Chromium (browser interop tests) ----------------------------------------
# CHROMIUM: not needed yet. When the browser suite lands, uncomment:
# if ! command -v chromium >/dev/null 2>&1; then
#     apt_install chromium chromium-driver
# fi

# --- Chromium for the chat page's browser test (clients/demo) ----------------
# Debian's own build, driven by playwright-core; Playwright never downloads one.
if ! command -v chromium >/dev/null 2>&1; then
    apt_install chromium
fi

# --- Debian packaging (scripts/package.sh, deploy/test-package.sh) -------------
# dpkg-deb comes with dpkg; dpkg-shlibdeps is in dpkg-dev, strip in binutils,
# and systemd-analyze (the unit's verification) in systemd, which installs
# fine where it is not PID 1 and then only provides its tools.
packaging=()
command -v dpkg-shlibdeps >/dev/null 2>&1 || packaging+=(dpkg-dev)
command -v strip >/dev/null 2>&1 || packaging+=(binutils)
command -v systemd-analyze >/dev/null 2>&1 || packaging+=(systemd)
if [ "${#packaging[@]}" -gt 0 ]; then
    apt_install "${packaging[@]}"
fi

# --- npm packages of tests/interop --------------------------------------------
# `npm ci` wipes node_modules and reinstalls, so it only runs when the lock file
# changed since the last install (a stamp holds the lock file's hash).
if [ -f "$interop_dir/package-lock.json" ]; then
    lock_hash="$(sha256sum "$interop_dir/package-lock.json" | cut -d' ' -f1)"
    stamp="$interop_dir/node_modules/.ringcast-lock-sha256"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_hash" ]; then
        step npm-ci npm ci --prefix "$interop_dir" --no-audit --no-fund
        echo "$lock_hash" >"$stamp"
    fi
else
    step npm-install npm install --prefix "$interop_dir" --no-audit --no-fund
fi

# --- npm packages of clients/js, clients/demo, tests/soak and tests/console --
# Same stamp rule as tests/interop: `npm ci` only when the lock file changed.
for client_dir in "$repo_root/clients/js" "$repo_root/clients/demo" "$repo_root/tests/soak" \
    "$repo_root/tests/console"; do
    client_lock="$client_dir/package-lock.json"
    client_hash="$(sha256sum "$client_lock" | cut -d' ' -f1)"
    client_stamp="$client_dir/node_modules/.ringcast-lock-sha256"
    if [ ! -f "$client_stamp" ] || [ "$(cat "$client_stamp")" != "$client_hash" ]; then
        step "npm-ci-$(basename "$client_dir")" npm ci --prefix "$client_dir" --no-audit --no-fund
        echo "$client_hash" >"$client_stamp"
    fi
done
