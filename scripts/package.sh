#!/usr/bin/env bash
# Builds the Debian package target/debian/ringcast_<version>_<arch>.deb and
# prints its path as the last line.
#
#   scripts/package.sh            # cargo build --release first (a no-op when up to date)
#   scripts/package.sh --no-build # package target/release/ringcast as it is
#
# It holds: /usr/bin/ringcast (debug info stripped, symbols kept so
# backtraces and perf still name functions), the systemd unit in
# /usr/lib/systemd/system, the kernel settings in /usr/lib/sysctl.d, the
# configuration /etc/ringcast/ringcast.toml (a conffile), and the docs in
# /usr/share/doc/ringcast (with the Grafana dashboard). The maintainer scripts (deploy/debian/) create
# the `ringcast` system user, a master token and /etc/ringcast/tls; see deploy/README.md.
#
# Why dpkg-deb and not cargo-deb: dpkg-deb is part of dpkg, on every Debian
# machine, so packaging needs no network and no extra crate build (cargo
# install cargo-deb compiles for minutes on two cores, which would not fit
# the test step). The control file is a dozen lines written here, the
# shared-library dependencies come from dpkg-shlibdeps (dpkg-dev) as
# debhelper would compute them, and dpkg-deb --root-owner-group gives
# root-owned files without fakeroot.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
target_dir="${CARGO_TARGET_DIR:-$repo_root/target}"

build=1
for arg in "$@"; do
    case "$arg" in
        --no-build) build=0 ;;
        *) echo "usage: scripts/package.sh [--no-build]" >&2; exit 2 ;;
    esac
done

for tool in dpkg-deb dpkg-shlibdeps strip; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "package.sh: $tool is missing; scripts/setup.sh installs it (dpkg-dev, binutils)" >&2
        exit 1
    fi
done

if [ "$build" -eq 1 ]; then
    cargo build --release -p ringcast
fi
binary="$target_dir/release/ringcast"
[ -x "$binary" ] || { echo "package.sh: no $binary (run without --no-build)" >&2; exit 1; }

# The version of the [package] table of Cargo.toml (the workspace's own
# table has none).
version="$(awk '/^\[package\]/ { p = 1; next } /^\[/ { p = 0 } p && /^version *=/ { gsub(/[" ]/, "", $0); sub(/^version=/, ""); print; exit }' Cargo.toml)"
[ -n "$version" ] || { echo "package.sh: no version in Cargo.toml [package]" >&2; exit 1; }
arch="$(dpkg --print-architecture)"
name="ringcast_${version}_${arch}"
out_dir="$target_dir/debian"
stage="$out_dir/$name"
deb="$out_dir/$name.deb"

rm -rf "$stage" "$deb"
mkdir -p "$stage/DEBIAN"

# --- files -------------------------------------------------------------------
install -d -m 0755 "$stage/usr/bin" "$stage/usr/lib/systemd/system" "$stage/usr/lib/sysctl.d" \
    "$stage/etc/ringcast" "$stage/usr/share/doc/ringcast/grafana"
strip --strip-debug -o "$stage/usr/bin/ringcast" "$binary"
chmod 0755 "$stage/usr/bin/ringcast"
install -m 0644 deploy/ringcast.service "$stage/usr/lib/systemd/system/ringcast.service"
install -m 0644 deploy/sysctl.d/60-ringcast.conf "$stage/usr/lib/sysctl.d/60-ringcast.conf"
install -m 0644 deploy/ringcast.toml "$stage/etc/ringcast/ringcast.toml"
install -m 0644 README.md "$stage/usr/share/doc/ringcast/README.md"
install -m 0644 deploy/README.md "$stage/usr/share/doc/ringcast/deploy-README.md"
install -m 0644 ringcast.example.toml "$stage/usr/share/doc/ringcast/ringcast.example.toml"
install -m 0644 deploy/debian/copyright "$stage/usr/share/doc/ringcast/copyright"
install -m 0644 deploy/grafana/ringcast.json "$stage/usr/share/doc/ringcast/grafana/ringcast.json"

# --- control -----------------------------------------------------------------
for script in postinst prerm postrm; do
    install -m 0755 "deploy/debian/$script" "$stage/DEBIAN/$script"
done
echo /etc/ringcast/ringcast.toml >"$stage/DEBIAN/conffiles"
(cd "$stage" && find usr -type f -print0 | sort -z | xargs -0 md5sum) >"$stage/DEBIAN/md5sums"

# dpkg-shlibdeps reads debian/control of its working directory; an empty
# one in a scratch directory is enough for -O (print, do not write).
shlibs_dir="$(mktemp -d)"
trap 'rm -rf "$shlibs_dir"' EXIT
mkdir "$shlibs_dir/debian"
touch "$shlibs_dir/debian/control"
shlib_depends="$(cd "$shlibs_dir" && dpkg-shlibdeps -O -e"$stage/usr/bin/ringcast" 2>/dev/null |
    sed -n 's/^shlibs:Depends=//p')"
[ -n "$shlib_depends" ] || { echo "package.sh: dpkg-shlibdeps found no dependencies" >&2; exit 1; }

installed_kib="$(du -sk --exclude=DEBIAN "$stage" | cut -f1)"
description="$(awk -F'"' '/^\[package\]/ { p = 1; next } /^\[/ { p = 0 } p && /^description *=/ { print $2; exit }' Cargo.toml)"
cat >"$stage/DEBIAN/control" <<CONTROL
Package: ringcast
Version: $version
Architecture: $arch
Maintainer: ringcast developers <root@localhost>
Installed-Size: $installed_kib
Depends: $shlib_depends, passwd
Section: net
Priority: optional
Description: $description
 ringcast is a realtime pub/sub server for apps on socket.io-client v4:
 channels, presence with member profiles, broadcasts and user events, one
 pinned io_uring thread per core.
 .
 This package installs the server with a hardened systemd unit (the
 ringcast user, LimitNOFILE, graceful drain on stop, reload on SIGHUP),
 kernel settings in /usr/lib/sysctl.d, a configuration in /etc/ringcast and
 a generated master token. \`ringcast doctor\` checks the host.
CONTROL

# Reproducible: file times from the last commit when there is one.
if [ -z "${SOURCE_DATE_EPOCH:-}" ] && git rev-parse --git-dir >/dev/null 2>&1; then
    SOURCE_DATE_EPOCH="$(git log -1 --format=%ct)"
    export SOURCE_DATE_EPOCH
fi

# xz level 1: a third of level 6's time for a few percent more bytes, and
# every dpkg can read it.
dpkg-deb --root-owner-group -Zxz -z1 --build "$stage" "$deb" >/dev/null
rm -rf "$stage"
echo "$deb"
