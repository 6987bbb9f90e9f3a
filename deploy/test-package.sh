#!/usr/bin/env bash
# Builds the Debian package (scripts/package.sh) and checks it:
#   fields      dpkg-deb -I: name, version, architecture, dependencies
#   contents    dpkg-deb -c: every file at its path, mode and owner; the conffile
#   scripts     the maintainer scripts parse (sh -n)
#   install     dpkg --root into a throwaway root (maintainer scripts run
#               chrootless with DPKG_ROOT): the ringcast user, the token file,
#               the TLS directory, the binary runs, doctor loads the
#               installed configuration
#   unit        systemd-analyze verify on the installed unit prints nothing;
#               systemd-analyze security --offline rates it (printed)
#   upgrade     reinstalling keeps the generated token, and the TLS
#               directory as the admin left it
#   remove      remove keeps the conffile, purge removes /etc/ringcast
# Nothing touches the running system: no sysctl, no systemctl, no user added
# to this machine. Ends with "package test: N passed, M failed"; exit status
# 0 only if none failed.
set -uo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "ok    $1"; }
fail() { failed=$((failed + 1)); echo "FAIL  $1"; }
# check NAME COMMAND...: passes when the command succeeds.
check() {
    local name="$1"
    shift
    if "$@"; then pass "$name"; else fail "$name"; fi
}
finish() {
    echo "package test: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit
}

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

# --- build ----------------------------------------------------------------------
if ! deb="$(scripts/package.sh "$@" | tail -n 1)" || [ ! -f "$deb" ]; then
    fail "scripts/package.sh builds a .deb"
    finish
fi
pass "scripts/package.sh builds $(basename "$deb")"
version="$(awk '/^\[package\]/ { p = 1; next } /^\[/ { p = 0 } p && /^version *=/ { gsub(/[" ]/, ""); sub(/^version=/, ""); print; exit }' Cargo.toml)"
arch="$(dpkg --print-architecture)"
check "file name is ringcast_<version>_<arch>.deb" \
    test "$(basename "$deb")" = "ringcast_${version}_${arch}.deb"

# --- fields ---------------------------------------------------------------------
field() { dpkg-deb -f "$deb" "$1"; }
check "Package: ringcast" test "$(field Package)" = ringcast
check "Version: $version" test "$(field Version)" = "$version"
check "Architecture: $arch" test "$(field Architecture)" = "$arch"
check "Depends names libc6 and passwd" \
    bash -c '[[ "$1" == *"libc6 (>= "* && "$1" == *passwd* ]]' _ "$(field Depends)"
check "Installed-Size is a number of KiB" \
    bash -c '[[ "$1" =~ ^[0-9]+$ ]]' _ "$(field Installed-Size)"
check "dpkg-deb -I lists the control files" \
    bash -c 'info="$(dpkg-deb -I "$1")" &&
        for f in control conffiles md5sums postinst prerm postrm; do
            grep -qE "^ +[0-9]+ bytes, +[0-9]+ lines +\*? *$f\b" <<<"$info" || { echo "no $f" >&2; exit 1; }
        done' _ "$deb"

# --- contents -------------------------------------------------------------------
contents="$(dpkg-deb -c "$deb")"
# has_file MODE PATH: a root-owned entry with that mode.
has_file() {
    grep -qE "^$1 root/root +[0-9]+ [0-9-]+ [0-9:]+ \./$2\$" <<<"$contents"
}
for entry in \
    "-rwxr-xr-x usr/bin/ringcast" \
    "-rw-r--r-- usr/lib/systemd/system/ringcast.service" \
    "-rw-r--r-- usr/lib/sysctl.d/60-ringcast.conf" \
    "-rw-r--r-- etc/ringcast/ringcast.toml" \
    "-rw-r--r-- usr/share/doc/ringcast/README.md" \
    "-rw-r--r-- usr/share/doc/ringcast/deploy-README.md" \
    "-rw-r--r-- usr/share/doc/ringcast/ringcast.example.toml" \
    "-rw-r--r-- usr/share/doc/ringcast/copyright" \
    "-rw-r--r-- usr/share/doc/ringcast/grafana/ringcast.json"; do
    check "contents: ${entry#* } (${entry%% *}, root/root)" has_file "${entry%% *}" "${entry#* }"
done
check "contents: nothing owned by anyone but root" \
    bash -c '! grep -vqE "^[-dlrwx]{10} root/root " <<<"$1"' _ "$contents"
mkdir -p "$scratch/control"
dpkg-deb -e "$deb" "$scratch/control"
check "conffiles: exactly /etc/ringcast/ringcast.toml" \
    test "$(cat "$scratch/control/conffiles")" = /etc/ringcast/ringcast.toml
for script in postinst prerm postrm; do
    check "$script parses (sh -n)" sh -n "$scratch/control/$script"
done

# --- install into a throwaway root ------------------------------------------------
root="$scratch/root"
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/etc"
touch "$root/var/lib/dpkg/status"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"
printf 'root:*:19000:0:99999:7:::\n' >"$root/etc/shadow"
printf 'root:*::\n' >"$root/etc/gshadow"
# Chrootless: the maintainer scripts run here with DPKG_ROOT=$root; the
# root has no shell of its own. --force-depends: its dpkg database is empty.
dpkg_root() {
    dpkg --root="$root" --force-script-chrootless --force-depends --log=/dev/null "$@" \
        >"$scratch/dpkg.log" 2>&1 || { sed 's/^/  | /' "$scratch/dpkg.log"; return 1; }
}
if ! dpkg_root -i "$deb"; then
    fail "dpkg --root -i installs it"
    finish
fi
pass "dpkg --root -i installs it"
check "dpkg knows it as installed" \
    bash -c '[[ "$(dpkg --root="$1" -s ringcast 2>/dev/null)" == *"Status: install ok installed"* ]]' _ "$root"
check "postinst made the ringcast system user (no login, no home)" \
    grep -qE '^ringcast:x:[0-9]+:[0-9]+:ringcast realtime server:/nonexistent:/usr/sbin/nologin$' "$root/etc/passwd"
gid="$(awk -F: '$1 == "ringcast" { print $3 }' "$root/etc/group")"
check "postinst made the ringcast group" test -n "$gid"
token_file="$root/etc/ringcast/ringcast.env"
check "the master token file is 0640 root:ringcast" \
    test "$(stat -c '%a %u %g' "$token_file" 2>/dev/null)" = "640 0 $gid"
check "the master token is 48 random hex digits" \
    grep -qE '^RINGCAST_MASTER_TOKEN=[0-9a-f]{48}$' "$token_file"
check "the configuration is 0640 root:ringcast" \
    test "$(stat -c '%a %u %g' "$root/etc/ringcast/ringcast.toml")" = "640 0 $gid"
tls_dir="$root/etc/ringcast/tls"
check "postinst made /etc/ringcast/tls, a directory 0750 root:ringcast" \
    test -d "$tls_dir" -a "$(stat -c '%a %u %g' "$tls_dir" 2>/dev/null)" = "750 0 $gid"
check "ringcast --version is $version" \
    test "$("$root/usr/bin/ringcast" --version)" = "ringcast $version"
# doctor loads the installed configuration (whether this host passes its
# checks is not the question here: a report with no configuration line).
doctor_report="$("$root/usr/bin/ringcast" doctor --config "$root/etc/ringcast/ringcast.toml")"
check "doctor reads the installed configuration" \
    bash -c '[[ "$1" == *"connections=50,000 (connections_max)"* && "$1" != *"configuration:"* ]]' _ "$doctor_report"

# --- the unit -------------------------------------------------------------------
if command -v systemd-analyze >/dev/null 2>&1; then
    # verify --root needs the targets the unit names, and the commands it runs.
    cp -a /usr/lib/systemd/system/. "$root/usr/lib/systemd/system/"
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$root" ./usr/lib/systemd/system/ringcast.service
    mkdir -p "$root/bin"
    cp "$(type -P kill)" "$root/bin/kill"
    verify_out="$(systemd-analyze verify --root="$root" ringcast.service 2>&1)"
    verify_status=$?
    [ -z "$verify_out" ] || sed 's/^/  | /' <<<"$verify_out"
    check "systemd-analyze verify prints nothing" \
        test "$verify_status" -eq 0 -a -z "$verify_out"
    exposure="$(systemd-analyze security --offline=yes --root="$root" ringcast.service 2>/dev/null |
        sed -n 's/.*Overall exposure level for ringcast.service: \([0-9.]*\).*/\1/p')"
    echo "      systemd-analyze security: exposure ${exposure:-?} (0 best, 10 worst)"
    check "systemd-analyze security exposure is at most 2.0" \
        awk -v e="${exposure:-99}" 'BEGIN { exit !(e <= 2.0) }'
else
    fail "systemd-analyze is installed (scripts/setup.sh installs systemd)"
fi

# --- upgrade, remove, purge ---------------------------------------------------------
token_before="$(cat "$token_file")"
# An admin's certificate in the TLS directory, and a mode of their own.
printf 'a certificate\n' >"$tls_dir/fullchain.pem"
chmod 0700 "$tls_dir"
check "reinstalling (upgrade path) works" dpkg_root -i "$deb"
check "reinstalling keeps the generated token" test "$(cat "$token_file")" = "$token_before"
check "reinstalling keeps /etc/ringcast/tls, its mode and its files" \
    test "$(stat -c '%a %u %g' "$tls_dir")" = "700 0 $gid" -a "$(cat "$tls_dir/fullchain.pem")" = "a certificate"
rm "$tls_dir/fullchain.pem"
check "dpkg --root -r removes it" dpkg_root -r ringcast
check "remove takes the binary" test ! -e "$root/usr/bin/ringcast"
check "remove keeps the conffile" test -f "$root/etc/ringcast/ringcast.toml"
check "dpkg --root -P purges it" dpkg_root -P ringcast
check "purge takes /etc/ringcast" test ! -e "$root/etc/ringcast"

finish
