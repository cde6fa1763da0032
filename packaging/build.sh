#!/usr/bin/env bash
# Build the one-folder Linux app with PyInstaller, then run it with --self-test.
#
#   packaging/build.sh                 build venv in build/pyinstaller-venv, app in dist/car-desktop/
#   packaging/build.sh --no-install    reuse the build venv as it is (no pip calls)
#   packaging/build.sh --no-self-test  build only
#
# Environment: PYTHON (default python3) makes the build venv; CAR_DESKTOP_BUILD_VENV picks another
# venv (e.g. one that already has the app's dependencies); CAR_DESKTOP_PYI_CUDA=trim|keep (see
# car_desktop.spec). For a CPU-only app (much smaller), install CPU torch into the build venv first:
#   pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu
# The result: dist/car-desktop/car-desktop (run it; `--self-test` checks it), plus share/ with the
# .desktop file, AppStream metadata and icon laid out as under /usr (or /app for Flatpak).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="${CAR_DESKTOP_BUILD_VENV:-$ROOT/build/pyinstaller-venv}"
DIST="$ROOT/dist"
APP="$DIST/car-desktop"
APP_ID="io.github.car_desktop"
install=1
self_test=1
for arg in "$@"; do
  case "$arg" in
    --no-install) install=0 ;;
    --no-self-test) self_test=0 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown option: $arg" >&2; exit 2 ;;
  esac
done

stamp() { date +%s; }
t0=$(stamp)
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating build venv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
if [ "$install" = 1 ]; then
  echo "== installing the app's dependencies and PyInstaller into $VENV"
  # Installing the project pulls in its dependencies; the spec bundles the app from this source tree.
  "$VENV/bin/python" -m pip install -q "$ROOT" "pyinstaller>=6.11"
fi
t1=$(stamp)

echo "== PyInstaller (CAR_DESKTOP_PYI_CUDA=${CAR_DESKTOP_PYI_CUDA:-trim})"
rm -rf "$APP"
"$VENV/bin/python" -m PyInstaller --noconfirm --clean --log-level WARN \
  --distpath "$DIST" --workpath "$ROOT/build/pyinstaller" "$ROOT/packaging/car_desktop.spec"
t2=$(stamp)

# Desktop integration files, laid out as they go under a prefix (/usr, /app, ~/.local).
install -Dm644 "$ROOT/packaging/car-desktop.desktop" "$APP/share/applications/$APP_ID.desktop"
install -Dm644 "$ROOT/packaging/$APP_ID.metainfo.xml" "$APP/share/metainfo/$APP_ID.metainfo.xml"
install -Dm644 "$ROOT/resources/icons/car-desktop.svg" "$APP/share/icons/hicolor/scalable/apps/$APP_ID.svg"
install -Dm644 "$ROOT/resources/icons/car-desktop.png" "$APP/share/icons/hicolor/256x256/apps/$APP_ID.png"

echo "== built $APP ($(du -sh "$APP" | cut -f1)) in $((t2 - t1)) s (dependencies: $((t1 - t0)) s)"
if [ "$self_test" = 1 ]; then
  echo "== self-test of the built app"
  QT_QPA_PLATFORM="${QT_QPA_PLATFORM:-offscreen}" HF_HUB_OFFLINE=1 "$APP/car-desktop" --self-test
  echo "== self-test passed in $(( $(stamp) - t2 )) s"
fi
