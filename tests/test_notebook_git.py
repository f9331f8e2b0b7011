"""Git-friendly notebooks, in throwaway clones of this repository: the pre-commit hooks `make install` sets up
clean a dirty notebook on commit (outputs, execution counts, metadata) but keep its `parameters` tag, and nbdev's
merge driver (.gitattributes + `make hooks`) turns a real notebook conflict into a notebook that still loads."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT

VENV = Path(sys.executable).parent.parent
NB = "nbs/experiments/train_tabular.ipynb"


def git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=check, env=os.environ
    )


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    "A clone of this repository with this working tree's hook files, hooks installed by the Makefile's target."
    for k, v in {
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid", "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-cache"),
        "PATH": f"{VENV / 'bin'}:/usr/bin:/bin", "GIT_CONFIG_GLOBAL": "/dev/null", "HOME": str(tmp_path),
    }.items():  # fmt: skip
        monkeypatch.setenv(k, v)
    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(repo)], check=True)
    for name in [".pre-commit-config.yaml", ".gitattributes", "Makefile", "pyproject.toml"]:
        shutil.copy(ROOT / name, repo / name)  # what this tree would commit, also before it is committed
    shutil.copy(ROOT / NB, repo / NB)
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "--no-verify", "--allow-empty", "-m", "this working tree's hook files")
    res = subprocess.run(
        ["make", "--no-print-directory", "hooks", f"VENV={VENV}"], cwd=repo, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert "hooks: pre-commit and the nbdev merge driver are installed" in res.stdout
    assert git(repo, "status", "--porcelain").stdout == "", "installing the hooks changes no tracked file"
    return repo


def test_commit_hook_strips_outputs_and_metadata_but_keeps_the_parameters_tag(repo):
    path = repo / NB
    nb = nbformat.read(path, as_version=4)
    nb.metadata["language_info"] = {"name": "python", "version": "3.11.7"}
    nb.metadata["vscode"] = {"interpreter": {"hash": "0123"}}
    nb.metadata["kernelspec"]["display_name"] = "Python (mlkit)"
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        cell.execution_count = i + 1
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"output {i}\n")]
        cell.metadata["execution"] = {"iopub.status.busy": "2026-01-01T00:00:00"}
        cell.metadata["scrolled"] = True
    nb.cells[1].source = nb.cells[1].source.replace(
        "C: float = 1.0", "C: float = 0.7"
    )  # the change to commit
    nbformat.write(nb, path)
    git(repo, "add", NB)

    first = git(repo, "commit", "-m", "a notebook run by hand", check=False)
    assert first.returncode != 0, "the hook changed the notebook, so the commit stops"
    log = first.stdout + first.stderr
    assert "clear outputs of experiment notebooks" in log and "files were modified by this hook" in log

    clean = nbformat.read(path, as_version=4)
    code = [c for c in clean.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert code[0].metadata == {"tags": ["parameters"]}, "papermill's parameters tag survives"
    assert all(c.metadata == {} for c in code[1:])
    assert list(clean.metadata) == ["kernelspec"], "notebook metadata: only the kernelspec"
    assert clean.metadata.kernelspec.display_name == clean.metadata.kernelspec.name
    committed = (ROOT / NB).read_text()
    assert path.read_text() == committed.replace("C: float = 1.0", "C: float = 0.7"), (
        "the change, nothing else"
    )

    # the templates hook copied the notebook for `mlkit new`: the copy is staged with it
    copy = f"mlkit/templates/{NB.removeprefix('nbs/')}"
    assert (repo / copy).read_text() == path.read_text() and "templates (mlkit/templates/" in log
    git(repo, "add", NB, copy)
    second = git(repo, "commit", "-m", "a notebook run by hand", check=False)
    assert second.returncode == 0, second.stdout + second.stderr
    assert git(repo, "status", "--porcelain").stdout == ""
    assert sorted(git(repo, "show", "--name-only", "--format=", "HEAD").stdout.split()) == sorted([NB, copy])


def conflicting_branches(repo: Path) -> Path:
    "Two branches that change the parameters cell of the notebook differently; returns the notebook's path."
    path = repo / NB
    git(repo, "checkout", "--quiet", "-b", "other")
    for branch, value in [("other", "0.5"), ("main-line", "2.0")]:
        if branch == "main-line":
            git(repo, "checkout", "--quiet", "-")
        nb = nbformat.read(path, as_version=4)
        params = nb.cells[1]
        assert "C: float = 1.0" in params.source
        params.source = params.source.replace("C: float = 1.0", f"C: float = {value}")
        nbformat.write(nb, path)
        git(repo, "commit", "--quiet", "--no-verify", "-am", f"C = {value}")
    return path


def test_a_notebook_merge_conflict_leaves_a_valid_notebook(repo):
    path = conflicting_branches(repo)
    merge = git(repo, "merge", "other", check=False)
    assert merge.returncode != 0, "a real conflict: the merge stops"
    assert git(repo, "diff", "--name-only", "--diff-filter=U").stdout.split() == [NB]
    nb = nbformat.read(path, as_version=4)  # valid JSON and a valid notebook
    nbformat.validate(nb)
    sources = [c.source for c in nb.cells]
    ours = next(i for i, s in enumerate(sources) if "C: float = 2.0" in s)
    theirs = next(i for i, s in enumerate(sources) if "C: float = 0.5" in s)
    assert ours < theirs, "both sides of the conflicting cell are kept, ours first"
    assert any(s.startswith("`<<<<<<<") for s in sources[:ours]) and any(
        s.startswith("`>>>>>>>") for s in sources[theirs:]
    )


def test_without_the_driver_the_same_conflict_breaks_the_json(repo):
    "The control: git's text merge writes conflict markers into the JSON, which no notebook tool can open."
    git(repo, "config", "--remove-section", "merge.nbdev-merge")  # as in a clone before `make install`
    path = conflicting_branches(repo)
    assert git(repo, "merge", "other", check=False).returncode != 0
    assert git(repo, "diff", "--name-only", "--diff-filter=U").stdout.split() == [NB]
    with pytest.raises(json.JSONDecodeError):
        json.loads(path.read_text())
