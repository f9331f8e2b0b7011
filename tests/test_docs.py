"""README.md is generated from nbs/index.ipynb (CI catches drift), and `mlkit docs` builds the site offline."""

import subprocess
import sys
from pathlib import Path

import nbformat
from conftest import ROOT

from mlkit.docs import readme_text


def test_readme_is_what_the_generator_makes_from_the_index_notebook():
    expected = readme_text(ROOT / "nbs" / "index.ipynb")
    assert (ROOT / "README.md").read_text() == expected, (
        "README.md differs from nbs/index.ipynb: edit the notebook, then run `mlkit docs` (or make docs)"
    )


def test_the_index_notebook_opens_with_the_two_setup_commands_and_runs_nothing():
    nb = nbformat.read(ROOT / "nbs" / "index.ipynb", as_version=4)
    assert [c.cell_type for c in nb.cells] == ["markdown"] * len(nb.cells), "nbdev-test executes it: no code"
    text = readme_text(ROOT / "nbs" / "index.ipynb")
    setup = text.index("## Set up")
    assert (
        text.index("make demo   # create .venv") > setup
        and text.index("make test   # the same install") > setup
    )
    assert text.index("make demo") == text.index("make demo   # create .venv"), "the first command shown"


def test_mlkit_docs_builds_the_site_with_api_pages(tmp_path):
    mlkit = str(Path(sys.executable).parent / "mlkit")
    res = subprocess.run(
        [mlkit, "docs", "--out", str(tmp_path / "site"), "--no-readme"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    index = Path(res.stdout.strip())
    assert index == tmp_path / "site" / "index.html"
    page = index.read_text()
    assert "<a href='14_lab.html'>14_lab</a> (<a href='api/lab.html'>API</a>)" in page
    assert "make demo" in page
    libs = sorted(p.stem for p in (ROOT / "nbs").glob("[0-9]*.ipynb"))
    assert all((tmp_path / "site" / f"{stem}.html").is_file() for stem in libs)
    api = (tmp_path / "site" / "api" / "lab.html").read_text()
    assert "<section class='api' id='start_lab'>" in api
    assert (
        "<td><code>port</code></td><td>int | None</td><td>None</td><td>TCP port (default: a free one)</td>"
        in api
    )
