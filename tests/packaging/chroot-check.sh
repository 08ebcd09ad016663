#!/bin/sh
# Checks of the installed ocppd package, run as root inside a clean Debian chroot by
# scripts/deb.sh check (there is no systemd running there: nothing is started).
#
#   chroot-check.sh installed   user, groups, conffile, unit, polkit/udev/sysusers files, config
#   chroot-check.sh versions [PYTHON]  the Debian library versions the test suite runs against
#   chroot-check.sh testenv     /opt/ocppd-tests: a venv over the system site packages with only
#                               the test-side packages Debian lacks (or ships too old) from pip
#   chroot-check.sh lifecycle   upgrade keeps db and config edits; remove keeps; purge deletes
set -u

FAILED=0
ok() { echo "  ok: $*"; }
bad() { echo "  FAIL: $*"; FAILED=1; }
check() { # check DESCRIPTION COMMAND...
    desc=$1
    shift
    if "$@" >/tmp/check.out 2>&1; then ok "$desc"; else bad "$desc"; sed 's/^/    /' /tmp/check.out; fi
}

unit_dir() {
    for d in /usr/lib/systemd/system /lib/systemd/system; do
        [ -f "$d/ocppd.service" ] && { echo "$d"; return; }
    done
}

installed() {
    check "user ocppd exists" id ocppd
    for g in gpio spi dialout; do
        check "ocppd is in group $g" sh -c "id -nG ocppd | tr ' ' '\n' | grep -qx $g"
    done
    check "/etc/ocppd.toml is a conffile" \
        sh -c "dpkg-query -W -f='\${Conffiles}' ocppd | grep -q '^ /etc/ocppd.toml '"
    check "/etc/ocppd.toml is root:ocppd 0640" \
        sh -c '[ "$(stat -c "%U:%G %a" /etc/ocppd.toml)" = "root:ocppd 640" ]'
    ud=$(unit_dir)
    check "ocppd.service installed" test -n "$ud"
    check "ocppd-firmware-install@.service installed" test -f "$ud/ocppd-firmware-install@.service"
    check "ocppd.service enabled" test -L /etc/systemd/system/multi-user.target.wants/ocppd.service
    check "systemd-analyze verify ocppd.service" systemd-analyze verify --man=no "$ud/ocppd.service"
    check "sysusers.d/ocppd.conf" test -f /usr/lib/sysusers.d/ocppd.conf
    check "polkit rule" test -f /usr/share/polkit-1/rules.d/50-ocppd.rules
    check "udev rule" sh -c 'ls /lib/udev/rules.d/60-ocppd.rules /usr/lib/udev/rules.d/60-ocppd.rules 2>/dev/null | grep -q .'
    for m in man8/ocppd.8.gz man8/ocppctl.8.gz man5/ocppd.toml.5.gz; do
        check "man page $m" test -f "/usr/share/man/$m"
    done
    check "install-firmware refuses a call without a file (exit 2)" \
        sh -c '/usr/lib/ocppd/install-firmware; [ $? -eq 2 ]'
    check "ocppd --version" ocppd --version
    check "ocppctl --version" ocppctl --version
    # Nothing has run yet: no /run/ocppd. The check judges the file, not the service.
    check "ocppd --check-config on the installed /etc/ocppd.toml, as user ocppd" \
        runuser -u ocppd -- ocppd --check-config --config /etc/ocppd.toml
    check "the installed /etc/ocppd.toml is reported as not configured" \
        sh -c 'ocppd --check-config --config /etc/ocppd.toml | grep -q "not configured"'
    check "ocppd --check-config without sudo says why it cannot read" \
        sh -c 'runuser -u nobody -- ocppd --check-config 2>&1 | grep -q sudo'
    return $FAILED
}

versions() { # versions [PYTHON]
    "${1:-python3}" - <<'EOF'
import importlib.metadata as md
import sys
names = ["aiohttp", "pymodbus", "gpiozero", "cryptography", "pyserial", "fastjsonschema",
         "systemd-python", "pytest", "pytest-asyncio", "hypothesis", "websockets", "ocpp"]
found = []
for n in names:
    try:
        found.append(f"{n} {md.version(n)}")
    except md.PackageNotFoundError:
        found.append(f"{n} -")
print("  python " + sys.version.split()[0] + ", " + ", ".join(found))
EOF
}

# The test suite needs packages Debian lacks: above all `ocpp`, the test-side Central System.
# They go into a venv that sees the system site packages, so ocppd itself runs on the libraries
# the package depends on. pip installs a test requirement only when Debian's version (if any)
# does not satisfy it; a runtime library that pip replaced would make the run meaningless, so
# that is refused.
testenv() {
    python3 -m venv --system-site-packages /opt/ocppd-tests || return 1
    python3 - >/tmp/test-requirements.txt <<'EOF'
import tomllib
with open("/tmp/src/pyproject.toml", "rb") as f:
    extra = tomllib.load(f)["project"]["optional-dependencies"]["test"]
# selenium drives a browser; the chroot has none, so those tests skip (and say so).
print("\n".join(r for r in extra if not r.startswith("selenium")))
EOF
    /opt/ocppd-tests/bin/pip install -q --disable-pip-version-check \
        -r /tmp/test-requirements.txt || return 1
    echo "  from pip, for the tests only: $(/opt/ocppd-tests/bin/pip list --local \
        --disable-pip-version-check --format=freeze 2>/dev/null |
        grep -v -e '^pip==' -e '^setuptools==' | tr '\n' ' ')"
    /opt/ocppd-tests/bin/python - <<'EOF'
import importlib
import sys
runtime = ["aiohttp", "aiohttp_jinja2", "cryptography", "fastjsonschema", "gpiozero", "pymodbus",
           "serial", "serial_asyncio", "systemd", "ocppd"]
bad = [m for m in runtime
       if not importlib.import_module(m).__file__.startswith("/usr/lib/python3/dist-packages/")]
if bad:
    sys.exit(f"  FAIL: not Debian's: {', '.join(bad)}")
print("  ok: ocppd and its runtime libraries are Debian's (/usr/lib/python3/dist-packages)")
EOF
}

lifecycle() {
    apt_opts="-y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold"
    echo "# local edit: keep me" >>/etc/ocppd.toml
    install -d -o ocppd -g ocppd -m 0750 /var/lib/ocppd
    echo "fake database" >/var/lib/ocppd/ocppd.db
    chown ocppd:ocppd /var/lib/ocppd/ocppd.db

    # shellcheck disable=SC2086
    check "upgrade installs" apt-get install $apt_opts --no-install-recommends /tmp/ocppd-upgrade.deb
    check "upgraded version" sh -c "dpkg-query -W -f='\${Version}' ocppd | grep -q 'upgradetest1\$'"
    check "upgrade keeps the database" grep -qx "fake database" /var/lib/ocppd/ocppd.db
    check "upgrade keeps config edits" grep -q "local edit: keep me" /etc/ocppd.toml
    check "upgrade leaves the new default beside it" test -f /etc/ocppd.toml.dpkg-dist
    check "upgrade keeps root:ocppd 0640" \
        sh -c '[ "$(stat -c "%U:%G %a" /etc/ocppd.toml)" = "root:ocppd 640" ]'

    # shellcheck disable=SC2086
    check "remove" apt-get remove $apt_opts ocppd
    check "remove keeps the database" grep -qx "fake database" /var/lib/ocppd/ocppd.db
    check "remove keeps the config" grep -q "local edit: keep me" /etc/ocppd.toml
    check "state after remove is config-files" \
        sh -c "dpkg-query -W -f='\${Status}' ocppd | grep -q 'config-files'"

    # shellcheck disable=SC2086
    check "purge" apt-get purge $apt_opts ocppd
    check "purge deletes /var/lib/ocppd" test ! -e /var/lib/ocppd
    check "purge deletes /etc/ocppd.toml" test ! -e /etc/ocppd.toml
    check "purge deletes /etc/ocppd.toml.dpkg-dist" test ! -e /etc/ocppd.toml.dpkg-dist
    check "purge drops the statoverride" sh -c '! dpkg-statoverride --list /etc/ocppd.toml'
    if id ocppd >/dev/null 2>&1; then
        echo "  note: system user ocppd stays after purge (Debian policy)"
    fi
    return $FAILED
}

case "${1:-}" in
installed) installed ;;
versions) versions "${2:-python3}" ;;
testenv) testenv ;;
lifecycle) lifecycle ;;
*) echo "usage: chroot-check.sh installed|versions|testenv|lifecycle" >&2; exit 2 ;;
esac
