#!/usr/bin/env bash
# Runs a command in a private mount namespace in which the system's OpenBLAS and libgomp are empty
# files (bind mounts of /dev/null), so that nothing run there can load them (zlib stays: Python's own
# binascii and zlib modules link it; packaging/smoke.py checks that tinylearn does not):
#   unshare -m --propagation private packaging/without_system_libs.sh COMMAND...
set -euo pipefail
shopt -s nullglob
for f in /usr/lib/x86_64-linux-gnu/{libopenblas,libblas,libgomp}* /usr/lib/x86_64-linux-gnu/openblas*/*.so*; do
  mount --bind /dev/null "$(readlink -f "$f")"
done
exec "$@"
