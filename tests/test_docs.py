"""README.md is generated from nbs/index.ipynb (CI catches drift), and `mlkit docs` builds the site offline, with
a page per notebook in the folders of nbs/ and an API page per module, named by its full module."""

import importlib
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT

from mlkit.docs import SECTIONS, readme_text

NBS = ROOT / "nbs"


def _library_notebooks() -> list[Path]:
    "The library notebooks, relative to nbs/: every folder but experiments/ and hidden ones, index.ipynb left out."
    return sorted(
        rel
        for rel in (p.relative_to(NBS) for p in NBS.rglob("*.ipynb"))
        if rel != Path("index.ipynb")
        and rel.parts[0] != "experiments"
        and not any(part.startswith((".", "_")) for part in rel.parts)
    )


def _notebook_of(module: str) -> Path:
    "The notebook (relative to nbs/) that exports `module` (e.g. registry.export), whatever its number."
    found = [
        rel
        for rel in _library_notebooks()
        if any(
            re.search(rf"^#\|\s*default_exp\s+{re.escape(module)}\s*$", cell.source, re.M)
            for cell in nbformat.read(NBS / rel, as_version=4).cells
            if cell.cell_type == "code"
        )
    ]
    assert len(found) == 1, f"one notebook should export mlkit.{module}, found {found}"
    return found[0]


def test_readme_is_what_the_generator_makes_from_the_index_notebook():
    expected = readme_text(NBS / "index.ipynb")
    assert (ROOT / "README.md").read_text() == expected, (
        "README.md differs from nbs/index.ipynb: edit the notebook, then run `mlkit docs` (or make docs)"
    )


def test_the_index_notebook_opens_with_the_two_setup_commands_and_runs_nothing():
    nb = nbformat.read(NBS / "index.ipynb", as_version=4)
    assert [c.cell_type for c in nb.cells] == ["markdown"] * len(nb.cells), "nbdev-test executes it: no code"
    text = readme_text(NBS / "index.ipynb")
    setup = text.index("## Set up")
    assert (
        text.index("make demo   # create .venv") > setup
        and text.index("make test   # the same install") > setup
    )
    assert text.index("make demo") == text.index("make demo   # create .venv"), "the first command shown"


def test_the_map_of_the_package_names_every_subpackage_with_its_layer():
    text = readme_text(NBS / "index.ipynb")
    start = text.index("## Map of the package")
    section = text[start : text.index("\n## ", start + 1)]
    folders = sorted(
        p.name for p in NBS.iterdir() if p.is_dir() and p.name != "experiments" and p.name[0] not in "._"
    )
    for folder in folders:
        row = next((ln for ln in section.splitlines() if f"`mlkit.{folder}` (`nbs/{folder}/`" in ln), None)
        assert row, f"the map has no row for mlkit.{folder} (nbs/{folder}/)"
        layer = next(n for _, _, n, keys in SECTIONS if folder in keys)
        assert row.startswith(f"| {layer} "), (
            f"mlkit.{folder} is layer {layer} in mlkit.docs.SECTIONS: {row[:40]}"
        )
    assert "| 0 foundation | `mlkit.core`" in section and "| 5 faces | `mlkit.demo`" in section


def test_every_module_path_and_notebook_the_readme_names_exists():
    "A name left behind by a move (mlkit.tracking, nbs/09_export.ipynb) fails here, not in a reader's hands."
    text = readme_text(NBS / "index.ipynb")
    missing = []
    for name in sorted(set(re.findall(r"\bmlkit(?:\.\w+)+", text))):
        parts = name.split(".")
        for i in range(len(parts), 0, -1):  # the longest importable module, then attributes
            try:
                obj = importlib.import_module(".".join(parts[:i]))
                break
            except ModuleNotFoundError as err:
                if err.name != ".".join(parts[:i]):
                    raise
        rest = parts[i:]
        for attr in rest:
            obj = getattr(obj, attr, None)
        if obj is None:
            missing.append(name)
    assert not missing, f"README.md names what the package lacks: {missing}"
    paths = {p for p in re.findall(r"\bnbs/[\w/.-]+\.ipynb", text)}
    assert not [p for p in sorted(paths) if not (ROOT / p).is_file()], (
        "README.md names notebooks that are not there"
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    "The site as `mlkit docs` builds it (README left alone), built once for this module's tests."
    out = tmp_path_factory.mktemp("docs") / "site"
    mlkit = str(Path(sys.executable).parent / "mlkit")
    res = subprocess.run(
        [mlkit, "docs", "--out", str(out), "--no-readme"], cwd=ROOT, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert Path(res.stdout.strip()) == out / "index.html"
    return out


def test_mlkit_docs_builds_a_page_per_notebook_in_the_folders_of_nbs(site):
    libs = _library_notebooks()
    assert any(len(rel.parts) > 1 for rel in libs), "nested library notebooks"
    missing = [rel.as_posix() for rel in libs if not (site / rel.with_suffix(".html")).is_file()]
    assert not missing, f"no page for {missing}"
    experiments = sorted((NBS / "experiments").glob("*.ipynb"))
    assert experiments and all((site / "experiments" / f"{p.stem}.html").is_file() for p in experiments)
    assert "make demo" in (site / "index.html").read_text()


def test_the_index_groups_the_notebooks_by_layer_and_links_nested_pages(site):
    page = (site / "index.html").read_text()
    assert "<a href='92_lab.html'>92_lab</a> (<a href='api/lab.html'>API</a>)" in page
    export = _notebook_of("registry.export").with_suffix("").as_posix()  # registry/NN_export
    assert f"<a href='{export}.html'>{export}</a> (<a href='api/registry.export.html'>API</a>)" in page
    assert "<h3 id='registry'>mlkit.registry <span class='kind'>layer 3</span></h3>" in page
    headings = [page.index(f"<h3 id='{sid}'>") for sid, *_ in SECTIONS if f"<h3 id='{sid}'>" in page]
    assert len(headings) == len(SECTIONS) and headings == sorted(headings), (
        "one heading per section, bottom up"
    )
    registry, monitoring = page.index("<h3 id='registry'>"), page.index("<h3 id='monitoring'>")
    assert registry < page.index(f"href='{export}.html'") < monitoring, "a notebook sits under its subpackage"
    assert page.index("<h3 id='faces'>") < page.index("href='94_docs.html'") < page.index("id='experiments'")


def test_api_pages_are_named_by_full_module_and_link_back_to_their_notebook(site):
    assert {p.name for p in (site / "api").iterdir()} >= {
        "registry.export.html",
        "serving.core.html",
        "lab.html",
        "docs.html",
    }
    export_nb = _notebook_of("registry.export").with_suffix("").as_posix()
    api = (site / "api" / "registry.export.html").read_text()
    assert "<h1><code>mlkit.registry.export</code></h1>" in api
    assert "<section class='api' id='export_run'>" in api
    assert f"<a href='../{export_nb}.html'>notebook: {export_nb}</a>" in api
    core = (site / "api" / "serving.core.html").read_text()
    assert "<section class='api' id='ServingCore'>" in core
    nested = (site / f"{export_nb}.html").read_text()
    assert "<a href='../index.html'>mlkit docs</a>" in nested
    assert "<a href='../api/registry.export.html'>API: mlkit.registry.export</a>" in nested
    lab = (site / "api" / "lab.html").read_text()
    assert "<section class='api' id='start_lab'>" in lab
    assert (
        "<td><code>port</code></td><td>int | None</td><td>None</td><td>TCP port (default: a free one)</td>"
        in lab
    )
