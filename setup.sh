#!/usr/bin/env bash
# One entry point for a fresh Debian machine: installs what ddbench needs, then runs a job.
#   bash setup.sh demo   - distil + evaluate Fashion-MNIST (pixel + DM vs random real, IPC 1), print the leaderboard
#   bash setup.sh test   - run the test suite
#   bash setup.sh env    - only install (system packages, .venv, Fashion-MNIST)
set -euo pipefail
cd "$(dirname "$0")"

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
# torch is pinned to the build this project is tested with; override for another CUDA/CPU build.
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
NEED_GB=${NEED_GB:-7}  # free disk space the install needs (torch CUDA build ~5.6 GB)
FMNIST=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi
}

apt_packages=()
"$PYTHON" -m venv --help >/dev/null 2>&1 || apt_packages+=(python3-venv python3-pip)
[ -f "$FMNIST" ] || [ -n "${DDBENCH_DATA:-}" ] || apt_packages+=(dataset-fashion-mnist)
if [ ${#apt_packages[@]} -gt 0 ] && command -v apt-get >/dev/null; then
  echo ">> apt-get install ${apt_packages[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || echo "!! apt-get update failed"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_packages[@]}" \
    || echo "!! could not install ${apt_packages[*]}; see README (Data) for other ways to get Fashion-MNIST"
fi

if [ ! -x "$VENV/bin/ddbench" ] || [ pyproject.toml -nt "$VENV/.installed" ]; then
  echo ">> creating $VENV and installing ddbench"
  # torch's default (CUDA) build takes about 5.6 GB in the venv; say so before pip fails half-way
  disk=$(dirname "$VENV")
  while [ ! -d "$disk" ]; do disk=$(dirname "$disk"); done  # the venv's parents may not exist yet
  free_kb=$(df -Pk "$disk" 2>/dev/null | awk 'NR == 2 {print $4}') || free_kb=""
  if [ -n "$free_kb" ] && [ "$free_kb" -lt $((NEED_GB * 1024 * 1024)) ]; then
    echo "!! only $((free_kb / 1024 / 1024)) GB free under $(cd "$disk" && pwd); installing torch needs about $NEED_GB GB." >&2
    echo "!! Free some space, or put the venv elsewhere: VENV=/path/with/space bash setup.sh ..." >&2
    exit 1
  fi
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  # pip's pages of notices go to a log, shown only when a step fails
  log="$VENV/setup.log"
  : >"$log"
  quietly() {
    if ! "$@" >>"$log" 2>&1; then
      echo "!! failed: $*" >&2
      tail -n 40 "$log" >&2
      echo "!! the whole output is in $log" >&2
      exit 1
    fi
  }
  "$VENV/bin/python" -m pip install -q --upgrade pip >>"$log" 2>&1 || true
  # shellcheck disable=SC2086
  quietly "$VENV/bin/python" -m pip install -q $TORCH_SPEC
  quietly "$VENV/bin/python" -m pip install -q -e '.[test]'
  touch "$VENV/.installed"
  echo ">> installed (pip's output: $log)"
fi

case "${1:-env}" in
  env) echo ">> ready: source $VENV/bin/activate" ;;
  demo)
    "$VENV/bin/ddbench" run --dataset fashion-mnist --prior pixel --algo dm,real --ipc 1 --budget demo --out ddbench-out
    "$VENV/bin/ddbench" leaderboard --out ddbench-out --rows prior,matcher,ipc --format markdown
    ;;
  test) shift || true; "$VENV/bin/python" -m pytest -q "$@" ;;
  *) echo "usage: bash setup.sh [env|demo|test]" >&2; exit 2 ;;
esac
