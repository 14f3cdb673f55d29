#!/usr/bin/env bash
# The Debian packages the test suite's real servers need (nginx, a Docker engine, a registry,
# PostgreSQL, Chromium, a load generator), installed when missing. Called by `make test`
# (and so by .ci/run), `make bench-serve` and `make bench-soak`.
#   deployments/system-deps.sh              install what the suite needs and is missing
#   deployments/system-deps.sh hey          only these packages
#   deployments/system-deps.sh --check      say what is missing, install nothing (exit 1 if any)
# Installs as root, or through `sudo -n`; otherwise prints one message naming the packages and
# the command that installs them, and exits 1. The services a package starts are stopped:
# the tests start their own.
set -uo pipefail

check=0
if [ "${1:-}" = "--check" ]; then check=1; shift; fi

# package → the program that shows it is installed
declare -A program=(
  [nginx-light]=nginx                 # the stable serving endpoint
  [docker.io]=dockerd                 # the container, roll-out and push tests start their own engine
  [debootstrap]=debootstrap           # the base image, built from Debian packages
  [docker-registry]=docker-registry   # the image push test's registry
  [apache2-utils]=htpasswd            # its password file
  [chromium]=chromium                 # the Prefect UI browser test (Playwright drives it)
  [postgresql]=initdb                 # the scale-out test starts its own cluster
  [hey]=hey                           # the serving benchmark's load generator
)
order=(nginx-light docker.io debootstrap docker-registry apache2-utils chromium postgresql hey)
wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=("${order[@]}")

# where the programs live: PATH, the system folders a user's PATH may lack, PostgreSQL's own
search=${LIFECYCLE_SYSTEM_DEPS_PATH:-$PATH:/usr/sbin:/sbin:$(printf '%s:' /usr/lib/postgresql/*/bin)}
missing=()
for pkg in "${wanted[@]}"; do
  [ -n "${program[$pkg]:-}" ] || { echo "system-deps.sh: unknown package $pkg (known: ${order[*]})" >&2; exit 2; }
  PATH=$search command -v "${program[$pkg]}" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$check" = 1 ]; then
  echo "missing Debian packages: ${missing[*]}"
  exit 1
fi

as_root=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then as_root=(sudo -n); else as_root=(none); fi
fi
if [ "${as_root[*]}" = none ] || ! command -v apt-get >/dev/null 2>&1; then
  why="this user is not root and cannot sudo without a password"
  command -v apt-get >/dev/null 2>&1 || why="this system has no apt-get"
  cat >&2 <<EOF
The tests need Debian packages that are missing here: ${missing[*]}
They were not installed because $why. Install them, then run make test again:
    sudo apt-get update && sudo apt-get install -y ${missing[*]}
(on another system, install the programs they provide: $(for p in "${missing[@]}"; do printf '%s ' "${program[$p]}"; done)).
EOF
  exit 1
fi

echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq || { echo "apt-get update failed" >&2; exit 1; }
"${as_root[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null || { echo "apt-get install ${missing[*]} failed" >&2; exit 1; }
# the services these packages start are not ours to run: the tests start their own
for pkg in "${missing[@]}"; do
  case $pkg in
    nginx-light) service=nginx ;;
    docker-registry | postgresql) service=$pkg ;;
    *) continue ;;
  esac
  "${as_root[@]}" service "$service" stop >/dev/null 2>&1 || true
done
exit 0
