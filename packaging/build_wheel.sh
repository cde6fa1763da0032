#!/usr/bin/env bash
# Build the wheel and sdist with `python -m build`; with --check, install the wheel into a fresh venv
# and check its console script (version, a headless segmentation, the self-test).
#
#   packaging/build_wheel.sh           dist/car_desktop-<version>-py3-none-any.whl and .tar.gz
#   packaging/build_wheel.sh --check   also: fresh venv in build/wheel-check-venv, pip install the wheel,
#                                      car-desktop --version / segment / --self-test
#
# PYTHON (default python3) runs the build. The `build` frontend is used from PYTHON when it has it,
# else installed into a throwaway venv (build/build-frontend-venv). Nothing here needs a display: the
# self-test runs Qt offscreen with the tiny test models, and nothing is downloaded.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
CHECK_VENV="${CAR_DESKTOP_CHECK_VENV:-$ROOT/build/wheel-check-venv}"
check=0
for arg in "$@"; do
  case "$arg" in
    --check) check=1 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "unknown option: $arg" >&2; exit 2 ;;
  esac
done
cd "$ROOT"
version="$("$PYTHON" -c 'import ast,sys; t=ast.parse(open("car_desktop/__init__.py").read()); print(next(n.value.value for n in t.body if isinstance(n, ast.Assign) and n.targets[0].id == "__version__"))')"
wheel="dist/car_desktop-$version-py3-none-any.whl"

t0=$(date +%s)
frontend="$PYTHON"
if ! (cd / && "$PYTHON" -c 'import build.__main__') 2>/dev/null; then  # not the checkout's build/ folder
  frontend="$ROOT/build/build-frontend-venv/bin/python"
  if [ ! -x "$frontend" ]; then
    "$PYTHON" -m venv "$ROOT/build/build-frontend-venv"
    "$frontend" -m pip install -q build
  fi
fi
mkdir -p build dist
rm -f "$wheel" "dist/car_desktop-$version.tar.gz"
"$frontend" -m build --outdir dist "$ROOT" >build/build-wheel.log 2>&1 || { cat build/build-wheel.log; exit 1; }
echo "== built $wheel and dist/car_desktop-$version.tar.gz in $(( $(date +%s) - t0 )) s"

if [ "$check" = 1 ]; then
  t1=$(date +%s)
  rm -rf "$CHECK_VENV"
  "$PYTHON" -m venv "$CHECK_VENV"
  "$CHECK_VENV/bin/python" -m pip install -q "$wheel"
  t2=$(date +%s)
  echo "== installed into a fresh venv in $(( t2 - t1 )) s"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  cd "$work"   # away from the checkout, so only the installed package can be imported
  export QT_QPA_PLATFORM="${QT_QPA_PLATFORM:-offscreen}" HF_HUB_OFFLINE=1 CAR_DESKTOP_NO_DOWNLOAD=1
  test "$("$CHECK_VENV/bin/car-desktop" --version)" = "car-desktop $version"
  "$CHECK_VENV/bin/python" -c 'from PIL import Image; from car_desktop.selftest import synthetic_image; Image.fromarray(synthetic_image()).save("scene.png")'
  "$CHECK_VENV/bin/car-desktop" --test-models segment scene.png --concepts "sky, grass" --sam off --out masks >/dev/null
  test -s masks/scene_labels.png
  "$CHECK_VENV/bin/car-desktop" --self-test
  echo "== wheel checks passed in $(( $(date +%s) - t2 )) s"
fi
