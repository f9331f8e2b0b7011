"""environment.yml (for conda users) must agree with pyproject.toml, the one source of dependencies."""

import tomllib

import yaml
from conftest import ROOT


def test_environment_yml_matches_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    python = next(d for d in conda if d.startswith("python"))
    assert python.split("=")[1] == project["requires-python"].lstrip(">=~"), "same Python version"
    assert set(conda) == {python, "pip"}, "everything but Python itself comes from pyproject.toml"
    assert pip == ["-e .[dev]"], "conda installs the project with its dev extra, nothing else"
    assert "dev" in project["optional-dependencies"]


def test_torch_is_pinned_to_the_local_cpu_build():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch = [d for deps in project["optional-dependencies"].values() for d in deps if d.startswith("torch")]
    assert torch == ["torch==2.13.0"], "an unpinned torch pulls a multi-GB CUDA build"
