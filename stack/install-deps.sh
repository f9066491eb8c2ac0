#!/usr/bin/env bash
# Installs the system packages the reference stack needs, only when they are missing:
# the real Prometheus (with promtool) and PostgreSQL's server binaries, and Chromium with
# pdftotext (poppler-utils), which the report's browser tests use, and ssh-keygen
# (openssh-client), with which the tests check signed bundles as an auditor does.
# Debian/Ubuntu, as root.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

# PostgreSQL server binaries of any major version (the stack looks in the same places).
have_initdb() {
  local bindir
  bindir=$(pg_config --bindir 2>/dev/null || true)
  [ -n "$bindir" ] && [ -x "$bindir/initdb" ] && return 0
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}
have_postgres() { command -v pg_dump >/dev/null && command -v pg_restore >/dev/null && have_initdb; }
have_prometheus() { command -v prometheus >/dev/null && command -v promtool >/dev/null; }

need=()
command -v make >/dev/null || need+=(make)
have_prometheus || need+=(prometheus)
have_postgres || need+=(postgresql)
command -v chromium >/dev/null || need+=(chromium)
command -v pdftotext >/dev/null || need+=(poppler-utils)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing system packages: ${need[*]}; install them as root: apt-get install ${need[*]}" >&2
    exit 1
  fi
  echo "installing ${need[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

missing=()
command -v make >/dev/null || missing+=("make")
have_prometheus || missing+=("prometheus and promtool on PATH (Debian package prometheus)")
have_postgres || missing+=("PostgreSQL server binaries (initdb) and pg_dump/pg_restore (Debian package postgresql)")
command -v chromium >/dev/null || missing+=("chromium (Debian package chromium)")
command -v pdftotext >/dev/null || missing+=("pdftotext (Debian package poppler-utils)")
command -v ssh-keygen >/dev/null || missing+=("ssh-keygen (Debian package openssh-client)")
if [ ${#missing[@]} -gt 0 ]; then
  printf 'still missing after install: %s\n' "${missing[@]}" >&2
  exit 1
fi

