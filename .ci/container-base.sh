#!/usr/bin/env bash
# .ci/container-base.sh TAG: a Debian bookworm base image with python3 and python3-venv, for the
# container tests (tests/test_container.py), built from Debian's packages and imported as TAG.
#
# Why not python:3.11-slim: CI machines reach package registries (Debian's mirrors, PyPI) but no
# container registry, so no base image can be pulled. mmdebstrap builds the same kind of root file
# system from the apt mirror, and `docker import` turns it into an image; the Dockerfiles take it
# as `--build-arg BASE_IMAGE=TAG` and keep python:3.11-slim as their default for everyone else.
#
# The image carries this machine's CA certificates and pip's index, so that pip inside
# `docker build --network host` reaches the registry the way it does here (CI's TLS may be
# intercepted by a CA of its own). That makes it a local image: never push it.
#
# Idempotent: a TAG that exists is left as it is (`docker rmi TAG` to rebuild it). Needs root,
# mmdebstrap (apt-get install mmdebstrap) and a Docker daemon (DOCKER_HOST names the one to use).
# Sizes and build times: README, "Serve over HTTP", and benchmarks/results/container.json.
#
#   DEBIAN_MIRROR   http://deb.debian.org/debian          (the security suite comes from
#   SECURITY_MIRROR http://deb.debian.org/debian-security   these two)
#   CA_BUNDLE       the CA bundle to trust inside (default: pip's `cert`, else the system's)
set -euo pipefail

tag=${1:?usage: .ci/container-base.sh TAG}
docker=${DOCKER:-docker}

if "$docker" image inspect "$tag" >/dev/null 2>&1; then
  echo "container-base: $tag exists, kept"
  exit 0
fi
command -v mmdebstrap >/dev/null || { echo "container-base: mmdebstrap is missing (apt-get install mmdebstrap)" >&2; exit 1; }

pip_setting() {  # the value of a pip setting on this machine: environment first, then pip's config files
  local env_name=$1 key=$2 value=${!1:-}
  if [ -z "$value" ] && command -v pip >/dev/null; then
    value=$(pip config get "global.$key" 2>/dev/null || true)
  fi
  printf '%s' "$value"
}

ca_bundle=${CA_BUNDLE:-$(pip_setting PIP_CERT cert)}
ca_bundle=${ca_bundle:-/etc/ssl/certs/ca-certificates.crt}
[ -r "$ca_bundle" ] || { echo "container-base: cannot read the CA bundle $ca_bundle (set CA_BUNDLE)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$ca_bundle" "$work/build-host.crt"
{
  echo "[global]"
  echo "cert = /etc/ssl/certs/ca-certificates.crt"
  # Only an http(s) index means the same inside; file:// ones and find-links are this machine's folders.
  for pair in "PIP_INDEX_URL index-url" "PIP_EXTRA_INDEX_URL extra-index-url"; do
    set -- $pair
    urls=$(pip_setting "$1" "$2" | tr ' ' '\n' | grep -E '^https?://' | tr '\n' ' ' || true)
    if [ -n "$urls" ]; then echo "$2 = $urls"; fi
  done
} >"$work/pip.conf"

mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}
start=$SECONDS
# minbase: Essential plus apt (and passwd, for the images' useradd). The merged-usr hook sets up
# merged /usr itself; otherwise apt picks the usrmerge package, which brings 50 MB of perl.
# Documentation and message translations stay out, as in Debian's slim images (copyrights stay).
# The host's bundle goes in as a local CA file, so update-ca-certificates keeps it should a
# derived image run it again.
if ! mmdebstrap --quiet --variant=minbase --format=tar \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --include=python3,python3-venv,ca-certificates \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --customize-hook="upload $work/build-host.crt /usr/local/share/ca-certificates/build-host.crt" \
  --customize-hook='chroot "$1" update-ca-certificates >/dev/null 2>&1' \
  --customize-hook="upload $work/pip.conf /etc/pip.conf" \
  bookworm - \
  "deb $mirror bookworm main" "deb $mirror bookworm-updates main" "deb $security bookworm-security main" \
  2>"$work/mmdebstrap.log" \
  | "$docker" import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
      --change 'CMD ["python3"]' \
      --message "mmdebstrap bookworm minbase + python3, python3-venv, ca-certificates (.ci/container-base.sh)" \
      - "$tag" >/dev/null
then
  tail -n 40 "$work/mmdebstrap.log" >&2
  echo "container-base: building $tag failed (mmdebstrap's last lines above)" >&2
  exit 1
fi
echo "container-base: built $tag in $((SECONDS - start)) s ($("$docker" image inspect -f '{{.Size}}' "$tag") bytes)"
