#!/usr/bin/env bash
# System packages the test suite needs beyond Python: PostgreSQL's server binaries (the HA tests start
# a throwaway cluster of their own), Chromium (the web console is tested in a real headless browser),
# zsh, fish and systemd-analyze (completion scripts and the systemd unit are checked by the real tools).
# Installs what is missing with apt when run as root; otherwise prints the command and fails, so a
# missing part is never silently skipped.
set -euo pipefail

missing=()
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && ! command -v initdb >/dev/null; then
    missing+=(postgresql)
fi
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
    missing+=(chromium)
fi
# the completion tests syntax-check the zsh and fish scripts with the real shells; the deploy example's
# unit is checked with systemd-analyze
for tool in zsh fish; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
command -v systemd-analyze >/dev/null || missing+=(systemd)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "tools/system-deps.sh: missing ${missing[*]}; install with: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi
echo "tools/system-deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
# the Debian postgresql package starts a cluster of its own; the tests never use it
if [[ " ${missing[*]} " == *" postgresql "* ]] && command -v pg_ctlcluster >/dev/null; then
    pg_lsclusters -h 2>/dev/null | while read -r ver name _; do pg_ctlcluster "$ver" "$name" stop || true; done
fi
