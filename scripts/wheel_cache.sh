#!/usr/bin/env bash
# Wheels of packages that PyPI has only as source (llama-cpp-python: minutes of C++ on every fresh
# machine), built once and kept in $MLC_MTP_WHEELS (default ~/.cache/mlc-mtp-wheels; CI keeps
# ~/.cache between runs), one folder per machine type and CPU feature set (the builds use the
# build machine's instruction set).  Prints the folder, for `pip install --find-links`; pip then
# takes the wheel there, whatever its own cache holds.
#   usage: scripts/wheel_cache.sh PYTHON PACKAGE...   (versions: the == pins of constraints.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
python=$1
shift
cpu=$( (grep -m1 -E '^(flags|Features)' /proc/cpuinfo 2>/dev/null || uname -m) | cksum | cut -d' ' -f1)
dir=${MLC_MTP_WHEELS:-$HOME/.cache/mlc-mtp-wheels}/$(uname -s)-$(uname -m)-$cpu
mkdir -p "$dir"
for package in "$@"; do
  pin=$(grep -i -m1 -E "^${package}==" constraints.txt || true)
  [ -n "$pin" ] || { echo "error: constraints.txt has no ${package}==VERSION line" >&2; exit 2; }
  version=${pin#*==}
  stem=$(echo "$package" | tr '[:upper:]-.' '[:lower:]__')
  if ! compgen -G "$dir/${stem}-${version}-*.whl" >/dev/null; then
    echo "building the ${package} ${version} wheel once, into $dir (minutes)" >&2
    "$python" -m pip wheel --quiet --no-deps --wheel-dir "$dir" "${package}==${version}" >&2
  fi
done
echo "$dir"
