# Installs what the station's demo and tests need, where it is missing. Sourced by scripts/demo
# and scripts/test; safe to run again (each step checks first).

# Prints to stderr, so that command output on stdout stays clean.
say() { printf '==> %s\n' "$*" >&2; }

# apt-get needs root; as another user, use sudo when it is there.
apt_install() {
  local runner=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then runner=(sudo); else
      say "missing Debian packages: $*; install them as root: apt-get install -y $*"
      return 1
    fi
  fi
  if [ -z "${STATION_APT_UPDATED:-}" ]; then
    "${runner[@]}" apt-get update -qq
    export STATION_APT_UPDATED=1
  fi
  say "installing Debian packages: $*"
  DEBIAN_FRONTEND=noninteractive "${runner[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# PostgreSQL server binaries: the station runs its own private cluster from them.
ensure_postgresql() {
  if command -v initdb >/dev/null 2>&1 || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    return 0
  fi
  apt_install postgresql
}

# pg_dump, next to initdb or on PATH: a ceremony test dumps its database to check that no key
# material was stored. Debian's server package depends on its client package, which has pg_dump,
# but an initdb from elsewhere may come without it.
ensure_pg_dump() {
  local initdb
  initdb=$(command -v initdb || compgen -G '/usr/lib/postgresql/*/bin/initdb' | head -n 1 || true)
  if [ -n "$initdb" ] && [ -x "$(dirname "$(readlink -f "$initdb")")/pg_dump" ]; then
    return 0
  fi
  if command -v pg_dump >/dev/null 2>&1; then
    return 0
  fi
  apt_install postgresql-client
}

# A Python virtual environment in .venv with psec, the independent TR-31 implementation that the
# tests cross-check against.
ensure_python_venv() {
  local venv="$PWD/.venv"
  if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import psec' 2>/dev/null; then
    return 0
  fi
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    apt_install python3-venv
  fi
  say "creating $venv with psec"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/psec/requirements.txt
}

# OpenSSL's command line, the independent judge of the factory PKI tests: they verify every
# issued certificate with `openssl verify`, read it with `openssl x509 -text`, and make makers'
# certificate chains and foreign CSRs with `openssl req` and `openssl x509`.
ensure_openssl() {
  if command -v openssl >/dev/null 2>&1; then
    return 0
  fi
  apt_install openssl
}

# SoftHSM2, the software PKCS#11 token that the vault's PKCS#11 tests run against, and OpenSC's
# pkcs11-tool for inspecting a token by hand. Each test initialises its own token in a temporary
# folder through SOFTHSM2_CONF, so nothing is set up here beyond the packages.
ensure_softhsm() {
  local module
  for module in /usr/lib/softhsm/libsofthsm2.so /usr/lib/*/softhsm/libsofthsm2.so; do
    if [ -e "$module" ] && command -v pkcs11-tool >/dev/null 2>&1; then
      return 0
    fi
  done
  apt_install softhsm2 opensc
}
