"""Packaging: the wheel carries every module and data file, the installed layout finds its resources,
the desktop integration files are valid, and ``--self-test`` passes both through the console script
and on the unpacked wheel (where it also shows that ``paths`` finds the resources inside the package).

The wheel is built once per session from a copy of the source tree (``pip wheel --no-deps
--no-build-isolation`` with this venv's setuptools: a few seconds, offline, nothing written into the
checkout). Installing it into a fresh venv and the PyInstaller build are too slow for the suite; see
packaging/build.sh and the README's "Packaging" section.
"""

from __future__ import annotations

import ast
import configparser
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import car_desktop
from car_desktop import selftest

ROOT = Path(__file__).resolve().parents[1]
PACKAGING = ROOT / "packaging"
APP_ID = "io.github.car_desktop"
DESKTOP_FILE = PACKAGING / "car-desktop.desktop"
METAINFO = PACKAGING / f"{APP_ID}.metainfo.xml"
ICONS = ROOT / "resources" / "icons"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(QT_QPA_PLATFORM="offscreen", HF_HUB_OFFLINE="1", CAR_DESKTOP_NO_DOWNLOAD="1",
               PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="2")
    env.pop("PYTHONPATH", None)
    return env


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the checkout (so the build leaves nothing in the source tree)."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("car_desktop", "resources"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    out = base / "dist"
    # No build isolation: offline and fast. The venv's setuptools is recent enough (torch itself
    # requires setuptools>=77, which builds wheels without the separate `wheel` package).
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "--no-index", "-q", "-w", str(out), str(src)],
                          capture_output=True, text=True, timeout=180, env=_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wheels = list(out.glob("car_desktop-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="session")
def unpacked_wheel(wheel, tmp_path_factory) -> Path:
    """The wheel's files laid out as pip installs them into site-packages."""
    target = tmp_path_factory.mktemp("site-packages")
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(target)
    return target


def _source_files(folder: Path, pattern: str) -> set[str]:
    return {p.relative_to(ROOT).as_posix() for p in folder.rglob(pattern) if "__pycache__" not in p.parts}


# --------------------------------------------------------------------------- the wheel
def test_wheel_has_every_module_and_data_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    # Every module of the package: pyproject lists the packages explicitly, so a new sub-package that
    # is not added there would silently be missing from the wheel.
    modules = _source_files(ROOT / "car_desktop", "*.py")
    assert modules and not modules - names, f"missing from the wheel: {sorted(modules - names)}"
    # Every bundled resource, under car_desktop/resources/ (the top-level resources/ is mapped there).
    resources = {f"car_desktop/resources/{p.relative_to(ROOT / 'resources').as_posix()}"
                 for p in (ROOT / "resources").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    for needed in ("models.json", "style/app.qss", "icons/car-desktop.svg", "icons/car-desktop.png"):
        assert f"car_desktop/resources/{needed}" in resources
    assert not resources - names, f"missing from the wheel: {sorted(resources - names)}"
    configs = (_source_files(ROOT / "car_desktop" / "engine" / "model_configs", "*.json")
               | _source_files(ROOT / "car_desktop" / "engine" / "model_configs", "*.yaml"))
    assert configs and not configs - names, f"missing from the wheel: {sorted(configs - names)}"


def test_wheel_metadata_version_and_console_script(wheel):
    zf = zipfile.ZipFile(wheel)
    version = car_desktop.__version__
    assert wheel.name.startswith(f"car_desktop-{version}-")
    info = f"car_desktop-{version}.dist-info"
    metadata = zf.read(f"{info}/METADATA").decode()
    assert f"\nVersion: {version}\n" in metadata
    assert "Requires-Dist: torch" in metadata and "Requires-Dist: PySide6-Essentials" in metadata
    entry_points = configparser.ConfigParser()
    entry_points.read_string(zf.read(f"{info}/entry_points.txt").decode())
    assert entry_points["console_scripts"]["car-desktop"].strip() == "car_desktop.cli:main"


# --------------------------------------------------------------------------- dependencies
#: Optional modules the tests never install, with the distribution that provides them.
NOT_INSTALLED = {"mobile_sam": "mobilesam-mirror"}


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level module -> the files of car_desktop/ that import it (absolute, outside the standard library),
    lazy imports inside functions included."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "car_desktop").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for top in {n.split(".")[0] for n in names} - set(sys.stdlib_module_names) - {"car_desktop"}:
                found.setdefault(top, set()).add(path.relative_to(ROOT).as_posix())
    return found


def _declared(with_test_tools: bool = False) -> dict[str, Requirement]:
    """The requirements of pyproject.toml, core and extras (the test tools' only when asked: they
    cannot satisfy an import of the package), by canonical distribution name."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    lines = [*project["dependencies"],
             *(r for name, extra in extras.items() if with_test_tools or name != "test" for r in extra)]
    reqs = [Requirement(line) for line in lines]
    return {canonicalize_name(r.name): r for r in reqs if canonicalize_name(r.name) != "car-desktop"}


def _bounds_problem(req: Requirement) -> str | None:
    ops = {spec.operator for spec in req.specifier}
    lower = ops & {">=", ">", "==", "~=", "==="}
    upper = ops & {"<", "<=", "==", "~=", "==="}
    if lower and upper:
        return None
    return f"{req} needs {'a lower' if not lower else 'an upper'} bound"


def _import_problems(imports: dict[str, set[str]], declared: dict[str, Requirement]) -> list[str]:
    dists = importlib.metadata.packages_distributions()
    problems = []
    for module, files in sorted(imports.items()):
        names = dists.get(module) or ([NOT_INSTALLED[module]] if module in NOT_INSTALLED else [])
        where = ", ".join(sorted(files)[:3])
        if not names:
            problems.append(f"{module} (imported by {where}) is not installed: no distribution provides it")
            continue
        reqs = [declared[canonicalize_name(n)] for n in names if canonicalize_name(n) in declared]
        if not reqs:
            problems.append(f"{module} (distribution {'/'.join(names)}, imported by {where}) is not declared "
                            "in pyproject.toml")
        problems += [p for p in map(_bounds_problem, reqs) if p]
    return problems


def test_every_imported_distribution_is_declared_with_both_bounds():
    imports = _third_party_imports()
    assert {"torch", "open_clip", "PySide6", "huggingface_hub", "tqdm", "safetensors", "hydra"} <= set(imports)
    assert _import_problems(imports, _declared()) == []


def test_an_undeclared_import_is_reported():
    declared = _declared()
    # pytest is installed (so a distribution is known) but not a runtime dependency of the package.
    problems = _import_problems({"_pytest": {"car_desktop/x.py"}, "no_such_module_xyz": {"car_desktop/y.py"}},
                                declared)
    assert problems == [
        "_pytest (distribution pytest, imported by car_desktop/x.py) is not declared in pyproject.toml",
        "no_such_module_xyz (imported by car_desktop/y.py) is not installed: no distribution provides it",
    ]
    unbounded = dict(declared, numpy=Requirement("numpy>=1.24"))
    assert _import_problems({"numpy": {"car_desktop/z.py"}}, unbounded) == ["numpy>=1.24 needs an upper bound"]


def test_every_declared_requirement_has_both_bounds():
    assert [p for p in map(_bounds_problem, _declared(with_test_tools=True).values()) if p] == []


# --------------------------------------------------------------------------- --self-test
def _self_test(cmd: list[str], cwd: Path, package: Path | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=240)
    if package is not None:
        # paths, the model configs and the icons resolve inside the installed package, not the checkout.
        assert f"installed at {package}\n" in proc.stdout, proc.stdout + proc.stderr
        assert "resources ok: " in proc.stdout and f"(in {package / 'resources'})" in proc.stdout, proc.stdout
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "self-test: passed" in proc.stdout
    assert "mask pixels" in proc.stdout and "SAM loaded" in proc.stdout
    return proc


@pytest.mark.slow
def test_console_script_self_test(tmp_path):
    script = Path(sys.executable).parent / "car-desktop"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "car_desktop"]
    _self_test([*cmd, "--self-test"], tmp_path)


@pytest.mark.slow
def test_self_test_from_the_wheel(unpacked_wheel, tmp_path):
    """The same check run on the wheel's files as pip lays them out (run away from the checkout)."""
    code = ("import sys; sys.path.insert(0, sys.argv[1])\n"
            "from car_desktop.cli import main\n"
            "sys.exit(main(['--self-test']))\n")
    _self_test([sys.executable, "-c", code, str(unpacked_wheel)], tmp_path, unpacked_wheel / "car_desktop")


def test_self_test_fails_clearly_without_resources(tmp_path, monkeypatch):
    from car_desktop import paths

    monkeypatch.setattr(paths, "resources_dir", lambda: tmp_path)
    with pytest.raises(selftest.SelfTestError, match="model manifest missing"):
        selftest.check_resources()
    (tmp_path / "models.json").write_text((ROOT / "resources" / "models.json").read_text())
    with pytest.raises(selftest.SelfTestError, match="style sheet missing"):
        selftest.check_resources()


def test_synthetic_image_is_deterministic():
    a, b = selftest.synthetic_image(), selftest.synthetic_image()
    assert a.shape == (120, 160, 3) and a.dtype.name == "uint8"
    assert (a == b).all() and len({tuple(c) for c in a.reshape(-1, 3)}) > 3


# --------------------------------------------------------------------------- desktop integration
def _desktop_entry() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # keys are case-sensitive
    parser.read(DESKTOP_FILE, encoding="utf-8")
    return parser["Desktop Entry"]


def test_desktop_file_keys():
    entry = _desktop_entry()
    for key in ("Type", "Name", "Exec", "Icon", "Categories", "Comment", "Terminal"):
        assert entry.get(key, "").strip(), f"{key} missing"
    assert entry["Type"] == "Application"
    assert entry["Exec"].split()[0] == "car-desktop"  # the console script / the frozen executable
    assert entry["Icon"] == APP_ID
    assert entry["Terminal"] == "false"
    categories = entry["Categories"]
    assert categories.endswith(";") and "Graphics" in categories.split(";")


def test_desktop_file_validates():
    tool = shutil.which("desktop-file-validate")
    if tool is None:
        pytest.skip("desktop-file-validate not installed (Debian package desktop-file-utils)")
    proc = subprocess.run([tool, str(DESKTOP_FILE)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "error" not in (proc.stdout + proc.stderr).lower()


def test_appstream_metadata():
    root = ET.parse(METAINFO).getroot()
    assert root.tag == "component" and root.get("type") == "desktop-application"
    assert root.findtext("id") == APP_ID
    launchable = root.find("launchable")
    assert launchable is not None and launchable.get("type") == "desktop-id"
    assert launchable.text == f"{APP_ID}.desktop"   # build.sh installs the .desktop file under this name
    assert root.findtext("icon") == _desktop_entry()["Icon"]
    assert root.findtext("name") == _desktop_entry()["Name"]
    assert root.findtext("provides/binary") == "car-desktop"
    # The newest release is the package version: bump both together.
    releases = root.findall("releases/release")
    assert releases and releases[0].get("version") == car_desktop.__version__
    assert root.findtext("metadata_license") and root.findtext("project_license")


def test_appstream_metadata_validates():
    tool = shutil.which("appstreamcli")
    if tool is None:
        pytest.skip("appstreamcli not installed (Debian package appstream)")
    proc = subprocess.run([tool, "validate", "--no-net", str(METAINFO)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_icon_files():
    svg = ET.parse(ICONS / "car-desktop.svg").getroot()
    assert svg.tag.endswith("svg") and svg.get("viewBox") == "0 0 256 256"
    from PIL import Image

    with Image.open(ICONS / "car-desktop.png") as im:
        assert im.size == (256, 256) and im.mode == "RGBA"
        alpha = im.getchannel("A")
        assert alpha.getpixel((0, 0)) == 0 and alpha.getpixel((128, 128)) == 255  # rounded, opaque centre


# --------------------------------------------------------------------------- build scripts
def test_build_scripts_parse():
    for script in ("build.sh", "build_wheel.sh"):
        path = PACKAGING / script
        assert os.access(path, os.X_OK), f"{script} is not executable"
        proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
    spec = (PACKAGING / "car_desktop.spec").read_text(encoding="utf-8")
    compile(spec, "car_desktop.spec", "exec")
    assert "pyi_entry.py" in spec and '"resources"' in spec and "model_configs" in spec
    entry = (PACKAGING / "pyi_entry.py").read_text(encoding="utf-8")
    assert entry.index("freeze_support()") < entry.index("main()")  # the CRF helper is a spawned child
