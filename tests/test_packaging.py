"""Packaging stays honest: pyproject.toml declares ranges (no pins), constraints.txt pins every declared dependency
inside its range, environment.yml / the Makefile / CI install with those pins, the version comes from the metadata,
and the changelog names every deprecated preset. The wheel itself is installed and smoke-tested by
``make test-install`` (.ci/test-install.sh), which CI runs."""

import importlib.metadata as md
import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml with tomllib")
from packaging.requirements import Requirement  # noqa: E402
from packaging.specifiers import SpecifierSet  # noqa: E402
from packaging.utils import canonicalize_name  # noqa: E402
from packaging.version import Version  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]


def _declared() -> dict[str, list[Requirement]]:
    """``{group: [Requirement]}``: ``"base"`` and every extra."""
    groups = {"base": [Requirement(r) for r in PROJECT["dependencies"]]}
    for extra, reqs in PROJECT["optional-dependencies"].items():
        groups[extra] = [Requirement(r) for r in reqs]
    return groups


def _constraints() -> dict[str, Version]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        assert m, f"constraints.txt: not an exact pin: {line!r}"
        name = canonicalize_name(m.group(1))
        assert name not in pins, f"constraints.txt pins {name} twice"
        pins[name] = Version(m.group(2))
    return pins


def test_dependencies_are_ranges_not_pins():
    for group, reqs in _declared().items():
        for r in reqs:
            assert not any(s.operator in ("==", "===") for s in r.specifier), f"{group}: {r} is a pin"
    base = {canonicalize_name(r.name): r.specifier for r in _declared()["base"]}
    # an environment that already has torch keeps it: the tested versions and the GPU machine's are admitted
    for torch, vision in (("2.14.1", "0.29.1"), ("2.11.0", "0.26.0"), ("2.4.0", "0.19.0")):
        assert base["torch"].contains(torch) and base["torchvision"].contains(vision), (torch, vision)
    py = SpecifierSet(PROJECT["requires-python"])
    assert all(py.contains(v) for v in ("3.10", "3.11", "3.12"))


def test_constraints_pin_every_declared_dependency_inside_its_range():
    pins = _constraints()
    assert pins["torch"] == Version("2.14.1") and pins["torchvision"] == Version("0.29.1")
    for group, reqs in _declared().items():
        for r in reqs:
            name = canonicalize_name(r.name)
            assert name in pins, f"{group}: {r.name} is not pinned in constraints.txt"
            assert r.specifier.contains(pins[name], prereleases=True), \
                f"constraints.txt pins {name}=={pins[name]}, outside {group}'s {r}"


def test_environment_yml_in_sync_with_pyproject():
    yaml = pytest.importorskip("yaml")
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    deps = env["dependencies"]
    conda = [d for d in deps if isinstance(d, str)]
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    py = next(d for d in conda if re.match(r"python[=<>]", d))
    assert SpecifierSet(PROJECT["requires-python"]).contains(py.split("=")[-1]), py
    assert "-c constraints.txt" in pip, "environment.yml must install with the tested versions"
    editable = next(p for p in pip if p.startswith("-e ."))
    extras = re.fullmatch(r"-e \.\[([a-z,]+)\]", editable).group(1).split(",")
    assert set(extras) <= set(PROJECT["optional-dependencies"]), extras
    makefile = (REPO / "Makefile").read_text()
    assert f"-e '.[{','.join(extras)}]'" in makefile, "environment.yml and `make install` install other extras"
    pins = _constraints()
    for p in pip + [d for d in conda if not re.match(r"(python|pip)\b", d)]:
        if p.startswith("-"):
            continue
        r = Requirement(p.replace("=", "==", 1) if re.fullmatch(r"[\w.\-]+=[\w.]+", p) else p)
        name = canonicalize_name(r.name)
        if name in pins:
            assert r.specifier.contains(pins[name]), f"environment.yml: {p} disagrees with constraints.txt"


def test_make_and_ci_install_with_the_constraints():
    makefile = (REPO / "Makefile").read_text()
    installs = [line for line in makefile.splitlines() if "pip install" in line]
    assert installs and all("-c constraints.txt" in line for line in installs), installs
    ci = (REPO / ".ci" / "run").read_text()
    for target in ("make test", "make test-install", "make docs"):
        assert re.search(rf"^\s*{re.escape(target)}\b", ci, re.M), f".ci/run does not call {target}"


def test_version_comes_from_metadata():
    import dsg_viz

    assert dsg_viz.__version__ == md.version("dsg_viz") == PROJECT["version"]
    assert "__version__" in dsg_viz.__all__


def test_every_package_folder_is_a_package():
    """A folder of modules without ``__init__.py`` would be left out of the wheel (packages.find)."""
    for d in (REPO / "dsg_viz").rglob("*"):
        if d.is_dir() and d.name != "__pycache__" and any(d.glob("*.py")):
            assert (d / "__init__.py").is_file(), f"{d.relative_to(REPO)} has modules but no __init__.py"


def test_changelog_names_every_deprecated_preset():
    from dsg_viz.generation import DEPRECATED_NAMES

    text = (REPO / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in text and "Deprecation policy" in text
    for old, new in DEPRECATED_NAMES.items():
        assert f"`{old}`" in text and f"`{new}`" in text, f"CHANGELOG.md does not mention {old} → {new}"
