#!/usr/bin/env bash
# Builds (or reuses) the Python venvs that run LocalStack without Docker for masq's tests, one per version:
#   2.3.2    Query protocol only, like the take-home image (older than LocalStack 3.0); needs Python 3.11
#   2026.3.0 JSON and Query; needs Python 3.13 (its code imports warnings.deprecated, new in 3.13, though its
#            metadata says >=3.10: on 3.12 every plugin fails to load, "No component plugins found")
# Each venv lands in ${XDG_CACHE_HOME:-$HOME/.cache}/masq-ci-localstack-<version> and is reused when its SQS and
# KMS providers import (their imports reach most of LocalStack; the entry point alone imports even on a Python that
# cannot run it). Prints one line per version: <version>=<path of the venv's python>.
# Usage: scripts/localstack/install.sh [2.3.2] [2026.3.0]     (no argument: both)
# Pythons: MASQ_LOCALSTACK_PYTHON_2_3_2 / MASQ_LOCALSTACK_PYTHON_2026_3_0, else python3.11 / python3.13 on PATH,
# else pyenv's.
set -euo pipefail

cache="${XDG_CACHE_HOME:-$HOME/.cache}"
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(2.3.2 2026.3.0)

# Why each pin: docs/localstack.md. 2.3.2's `[runtime]` extra needs amazon-kclpy, whose build downloads jars,
# so its runtime dependencies are listed by hand.
pins_2_3_2=(
  localstack-core==2.3.2 'airspeed-ext>=0.6.1' antlr4-python3-runtime==4.12.0 'apispec>=5.1.1'
  'aws-sam-translator>=1.15.1' awscli==1.29.80 'awscrt>=0.13.14' 'boto>=2.49.0' boto3==1.28.80 botocore==1.31.80
  'cbor2>=5.2.0,<5.7' 'crontab>=0.22.6' 'dnspython>=1.16.0' docker==6.0.1 'flask>=2.3.2,<3' 'flask-cors>=3.0.3,<3.1.0'
  flask-swagger==0.2.12 'hypercorn>=0.14.4,<0.16' json5==0.9.11 'jsonpatch>=1.24,<2.0' jsonpath-ng==1.5.3
  'jsonpath-rw>=1.4.0,<2.0.0' 'jsonschema<=4.19.0' 'localstack-client>=2.0' 'moto-ext[all]==4.2.4.post1'
  opensearch-py==2.1.1 'pymongo>=4.2.0' 'pyopenssl>=23.0.0,<24' 'cryptography<42' 'Quart>=0.18,<0.20'
  'readerwriterlock>=1.0.7' 'requests-aws4auth>=1.0' 'Werkzeug>=2.3.4,<3.0' 'xmltodict>=0.13.0' 'urllib3<2'
  'setuptools<70'
)

find_python() { # <minor> <override>
  local minor=$1 override=$2 p
  if [ -n "$override" ]; then echo "$override"; return; fi
  for p in "python3.$minor" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3."$minor".*/bin/python3; do
    # pyenv's shims exist for every installed version but fail unless it is selected: try each one.
    if "$p" -c 'import sys' >/dev/null 2>&1; then command -v "$p"; return; fi
  done
  echo "no Python 3.$minor found (set MASQ_LOCALSTACK_PYTHON_*)" >&2
  return 1
}

# This machine's pip configuration names local indexes that lack most packages: drop pip's line per package about it.
check='import localstack.runtime.main, localstack.services.sqs.provider, localstack.services.kms.provider'

pip_in() {
  "$1/bin/python" -m pip install --quiet --disable-pip-version-check "${@:2}" 2> >(grep -v "^WARNING: Location '.*' is ignored" >&2)
}

build() { # <version>
  local version=$1 venv="$cache/masq-ci-localstack-$1" python
  mkdir -p "$cache"
  # Two builds of one version at once (two CI runs, two test files) would delete each other's work: one waits.
  exec 9>"$venv.lock"
  flock 9
  if "$venv/bin/python" -c "$check" 2>/dev/null; then
    echo "$version=$venv/bin/python"
    return
  fi
  case "$version" in
    2.3.2) python=$(find_python 11 "${MASQ_LOCALSTACK_PYTHON_2_3_2:-}") ;;
    2026.3.0) python=$(find_python 13 "${MASQ_LOCALSTACK_PYTHON_2026_3_0:-}") ;;
    *) echo "unknown LocalStack version $version (known: 2.3.2, 2026.3.0)" >&2; return 2 ;;
  esac
  echo "building LocalStack $version into $venv with $python (a few minutes)" >&2
  rm -rf "$venv.partial"
  "$python" -m venv "$venv.partial"
  case "$version" in
    2.3.2)
      pip_in "$venv.partial" "${pins_2_3_2[@]}"
      pip_in "$venv.partial" 'plux<1.5'
      ;;
    2026.3.0)
      pip_in "$venv.partial" 'localstack-core[runtime]==2026.3.0'
      pip_in "$venv.partial" 'cbor2<6' 'pyopenssl==25.3.0' 'cryptography>=45.0.7,<47' service_identity
      ;;
  esac
  "$venv.partial/bin/python" -c "$check"
  # A venv's scripts name its own path: build under .partial, then rebuild in place is not needed because only
  # `python -m` is used; rename only once complete so an interrupted build is never reused.
  rm -rf "$venv"
  mv "$venv.partial" "$venv"
  echo "$version=$venv/bin/python"
  exec 9>&-
}

for v in "${versions[@]}"; do build "$v"; done
