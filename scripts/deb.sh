#!/usr/bin/env bash
# Debian package of ocppd: build it, lint it, and try it in clean Debian chroots.
#
#   scripts/deb.sh build   build dist/ocppd_<version>_all.deb (make deb)
#   scripts/deb.sh check   build, lintian (no error, no warning), then in clean minbase chroots
#                          of each suite in $OCPPD_DEB_SUITES (default: bookworm trixie):
#                          install with apt resolving the dependencies, check user, conffile,
#                          unit and config, run the test suite against Debian's libraries, and
#                          upgrade / remove / purge (make deb-check)
#
# Needs root for apt-get, debootstrap and chroot. Build tools are installed when missing.
# Base chroots are bootstrapped once and cached as tarballs in $OCPPD_DEB_CACHE (default
# ~/.cache/ocppd-deb) with the downloaded .debs, so a second run needs no bootstrap.
set -euo pipefail

# pybuild must see Debian's python3, never a pyenv or venv shim on PATH.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export LC_ALL=C.UTF-8

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${OCPPD_DEB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ocppd-deb}
SUITES=${OCPPD_DEB_SUITES:-bookworm trixie}
BUILD_DIR=$ROOT/build/deb
TEST_SRC=$BUILD_DIR/test-src  # the tests and sources the built package came from
DIST_DIR=$ROOT/dist
BUILD_DEPS="dh-python debhelper pybuild-plugin-pyproject lintian python3-all python3-setuptools
            dpkg-dev fakeroot"
CHECK_DEPS="debootstrap"
# Test-side libraries Debian ships. What it lacks (the `ocpp` package above all) or ships too
# old comes from pip into a venv over the system site packages (chroot-check.sh testenv), so
# the tests run ocppd on Debian's own aiohttp, pymodbus, gpiozero, cryptography...
TEST_DEPS="python3-pytest python3-pytest-asyncio python3-hypothesis python3-websockets
           python3-trustme python3-pyftpdlib python3-openssl python3-jsonschema python3-venv"
# The whole suite by default; OCPPD_DEB_PYTEST_ARGS='-m "not slow"' leaves out the kill test
# and the storage benchmarks.
PYTEST_ARGS=${OCPPD_DEB_PYTEST_ARGS:-}

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'deb.sh: %s\n' "$*" >&2; exit 1; }
elapsed() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

# --- build -------------------------------------------------------------------------------------

ensure_packages() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}: run as root or apt-get install them"
    say "installing ${missing[*]}"
    apt-get install -y --no-install-recommends "${missing[@]}" ||
        { apt-get update -q && apt-get install -y --no-install-recommends "${missing[@]}"; }
}

python_version() {
    sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$ROOT/ocppd/__init__.py"
}

debian_version() {
    dpkg-parsechangelog -l "$ROOT/debian/changelog" -S Version
}

# The version lives in ocppd/__init__.py; debian/changelog must carry the same one (a
# packaging-only change may add "+N" to it).
check_versions() {
    local py deb
    py=$(python_version)
    deb=$(debian_version)
    [ -n "$py" ] || die "no __version__ in ocppd/__init__.py"
    case "$deb" in
    "$py" | "$py"+*) ;;
    *) die "debian/changelog says $deb but ocppd/__init__.py says $py: add a changelog entry" ;;
    esac
}

# Copy the working tree (tracked and new files, not ignored ones) so the build never writes
# into the checkout, and its output lands in build/deb instead of the checkout's parent.
stage_source() {
    local dest=$1
    rm -rf "$BUILD_DIR"
    mkdir -p "$dest"
    if git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
        (cd "$ROOT" && git ls-files -z -co --exclude-standard |
            while IFS= read -r -d '' f; do
                [ -e "$f" ] || [ -L "$f" ] && printf '%s\0' "$f"
            done | tar --null -T - -cf -) | tar -C "$dest" -xf -
    else
        tar -C "$ROOT" --exclude=./.venv --exclude=./build --exclude=./dist --exclude=./.git \
            --exclude='*.egg-info' --exclude=__pycache__ -cf - . | tar -C "$dest" -xf -
    fi
}

cmd_build() {
    local t0=$SECONDS version src
    ensure_packages $BUILD_DEPS
    check_versions
    version=$(debian_version)
    src=$BUILD_DIR/ocppd-$version
    stage_source "$src"
    # The tests run in the chroots are the ones of this very tree, taken before the build
    # writes into it: a commit made while a check runs cannot pair new tests with an old package.
    mkdir -p "$TEST_SRC"
    (cd "$src" && cp -r tests pyproject.toml README.md debian systemd scripts etc "$TEST_SRC/")
    say "dpkg-buildpackage ocppd $version"
    if ! (cd "$src" && dpkg-buildpackage -us -uc -b) >"$BUILD_DIR/build.log" 2>&1; then
        tail -n 40 "$BUILD_DIR/build.log" >&2
        die "build failed, full log: $BUILD_DIR/build.log"
    fi
    mkdir -p "$DIST_DIR"
    cp "$BUILD_DIR/ocppd_${version}_all.deb" "$DIST_DIR/"
    say "built dist/ocppd_${version}_all.deb in $(elapsed $((SECONDS - t0)))"
}

# --- check -------------------------------------------------------------------------------------

cmd_lintian() {
    local t0=$SECONDS version
    version=$(debian_version)
    say "lintian"
    # --fail-on: errors and warnings fail; pedantic and info tags are shown for reading.
    lintian --pedantic --display-info --fail-on error,warning \
        "$BUILD_DIR/ocppd_${version}_"*.changes
    say "lintian clean in $(elapsed $((SECONDS - t0)))"
}

cmd_security() {
    local unit=$BUILD_DIR/ocppd.service
    # systemd-analyze wants an existing ExecStart binary; the sandbox is what is measured.
    sed 's#^ExecStart=/usr/bin/ocppd#ExecStart=/bin/true#' "$ROOT/systemd/ocppd.service" >"$unit"
    systemd-analyze verify --man=no "$unit"
    systemd-analyze security --offline=yes --no-pager "$unit" | grep 'Overall exposure' >&2
}

# Every mount made in a chroot, unmounted on any exit (innermost first).
MOUNTS=()
CHROOTS=()
cleanup() {
    local i
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        umount "${MOUNTS[$i]}" 2>/dev/null || umount -l "${MOUNTS[$i]}" 2>/dev/null || true
    done
    MOUNTS=()
    for i in "${CHROOTS[@]}"; do
        # Only ever a directory this script created under the cache, with nothing mounted.
        if ! grep -q " $i/" /proc/mounts; then rm -rf --one-file-system "$i"; fi
    done
    CHROOTS=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mount_in() { # mount_in TARGET mount-args...
    local target=$1
    shift
    mkdir -p "$target"
    mount "$@" "$target"
    MOUNTS+=("$target")
}

in_chroot() {
    chroot "$C" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive "$@"
}

base_tarball() { # a minbase chroot of the suite, bootstrapped once
    local suite=$1 tarball=$CACHE/$1-minbase.tar.gz tmp
    if [ ! -s "$tarball" ]; then
        local t0=$SECONDS
        say "debootstrap --variant=minbase $suite (cached afterwards in $tarball)"
        tmp=$CACHE/bootstrap-$suite.$$
        CHROOTS+=("$tmp")
        debootstrap --variant=minbase "$suite" "$tmp" >"$CACHE/debootstrap-$suite.log" 2>&1 ||
            { tail -n 20 "$CACHE/debootstrap-$suite.log" >&2; die "debootstrap $suite failed"; }
        tar -C "$tmp" -czf "$tarball.part" . && mv "$tarball.part" "$tarball"
        rm -rf --one-file-system "$tmp"
        say "bootstrapped $suite in $(elapsed $((SECONDS - t0)))"
    fi
    printf '%s\n' "$tarball"
}

# An upgrade of the package: same content, higher version, and a changed default config so
# dpkg has to decide between the local edits and the new file.
make_upgrade_deb() {
    local deb=$1 out=$2 tree=$BUILD_DIR/upgrade-tree version
    rm -rf "$tree"
    dpkg-deb -R "$deb" "$tree"
    version=$(sed -n 's/^Version: //p' "$tree/DEBIAN/control")
    sed -i "s/^Version: .*/Version: ${version}+upgradetest1/" "$tree/DEBIAN/control"
    printf '# a line the next release added\n' >>"$tree/etc/ocppd.toml"
    dpkg-deb --root-owner-group -b "$tree" "$out" >/dev/null
    rm -rf "$tree"
}

check_suite() {
    local suite=$1 deb=$2 upgrade_deb=$3 t0=$SECONDS tarball failed=0
    tarball=$(base_tarball "$suite")
    C=$CACHE/chroot-$suite.$$
    CHROOTS+=("$C")
    mkdir -p "$C" "$CACHE/apt-$suite"
    tar -C "$C" -xzf "$tarball"
    mount_in "$C/proc" -t proc proc
    mount_in "$C/dev/pts" --bind /dev/pts
    # Keep downloaded .debs between runs.
    mount_in "$C/var/cache/apt/archives" --bind "$CACHE/apt-$suite"
    cp /etc/resolv.conf "$C/etc/resolv.conf"
    # Nothing may start services inside the chroot.
    printf '#!/bin/sh\nexit 101\n' >"$C/usr/sbin/policy-rc.d"
    chmod 755 "$C/usr/sbin/policy-rc.d"
    cp "$deb" "$C/tmp/ocppd.deb"
    cp "$upgrade_deb" "$C/tmp/ocppd-upgrade.deb"
    cp "$ROOT/tests/packaging/chroot-check.sh" "$C/tmp/"
    mkdir -p "$C/tmp/src"
    # No ocppd/ here: the tests import the installed package. debian/, systemd/, scripts/, etc/
    # let tests/packaging check the sources the package was built from.
    cp -r "$TEST_SRC/." "$C/tmp/src/"
    find "$C/tmp/src" -name __pycache__ -prune -exec rm -rf {} +

    say "[$suite] apt-get install ./ocppd.deb"
    local t1=$SECONDS
    in_chroot apt-get update -q >/dev/null
    in_chroot apt-get install -y -q --no-install-recommends /tmp/ocppd.deb >"$C/tmp/install.log" 2>&1 ||
        { tail -n 30 "$C/tmp/install.log" >&2; die "[$suite] install failed"; }
    say "[$suite] installed with $(grep -c '^Setting up' "$C/tmp/install.log") packages in $(elapsed $((SECONDS - t1)))"

    in_chroot sh /tmp/chroot-check.sh installed || failed=1

    say "[$suite] test suite against Debian's libraries"
    t1=$SECONDS
    in_chroot apt-get install -y -q --no-install-recommends $TEST_DEPS >/dev/null
    # pip in the chroot trusts the CAs this machine trusts (a TLS-inspecting proxy's, say); the
    # minbase chroot has no CA store of its own.
    cp "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" "$C/tmp/host-ca.pem"
    in_chroot env PIP_CERT=/tmp/host-ca.pem sh /tmp/chroot-check.sh testenv || failed=1
    in_chroot sh /tmp/chroot-check.sh versions /opt/ocppd-tests/bin/python
    # The chroot's shell parses $PYTEST_ARGS, so quoted marker expressions work. Its own PID
    # namespace (and /proc): tests that look for leftover processes see only their own, not
    # whatever else runs on this machine.
    if ! unshare --fork --pid --mount-proc="$C/proc" \
        chroot "$C" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
        sh -c "cd /tmp/src && /opt/ocppd-tests/bin/python -m pytest -q -p no:cacheprovider -rfEs --continue-on-collection-errors $PYTEST_ARGS tests" \
        >"$CACHE/pytest-$suite.log" 2>&1; then
        failed=1
        say "[$suite] TESTS FAILED (full log: $CACHE/pytest-$suite.log)"
    fi
    grep -E '^(SKIPPED|FAILED|ERROR)|^[0-9]+ (passed|failed|skipped|error)|no tests ran' "$CACHE/pytest-$suite.log" | tail -n 40 >&2
    say "[$suite] tests took $(elapsed $((SECONDS - t1)))"

    say "[$suite] upgrade, remove, purge"
    in_chroot sh /tmp/chroot-check.sh lifecycle || failed=1

    cleanup
    say "[$suite] done in $(elapsed $((SECONDS - t0)))"
    return $failed
}

cmd_check() {
    local t0=$SECONDS version deb upgrade_deb suite failed=()
    [ "$(id -u)" -eq 0 ] || die "check needs root (apt-get, debootstrap, chroot)"
    ensure_packages $BUILD_DEPS $CHECK_DEPS
    cmd_build
    cmd_lintian
    cmd_security
    version=$(debian_version)
    deb=$DIST_DIR/ocppd_${version}_all.deb
    upgrade_deb=$BUILD_DIR/ocppd_${version}+upgradetest1_all.deb
    make_upgrade_deb "$deb" "$upgrade_deb"
    mkdir -p "$CACHE"
    for suite in $SUITES; do
        check_suite "$suite" "$deb" "$upgrade_deb" || failed+=("$suite")
    done
    if [ ${#failed[@]} -gt 0 ]; then
        die "check failed in: ${failed[*]} (after $(elapsed $((SECONDS - t0))))"
    fi
    say "deb-check passed for $SUITES in $(elapsed $((SECONDS - t0)))"
}

case "${1:-}" in
build) cmd_build ;;
check) cmd_check ;;
lintian) cmd_lintian ;;
*) die "usage: scripts/deb.sh build|check|lintian" ;;
esac
