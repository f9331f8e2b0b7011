"""The registry from the command line, on a model exported from a real run: list, promote (gated), audit,
lineage, card, rollback; and the data-quality report."""

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def mlkit(*args):
    return subprocess.run(
        [sys.executable, "-m", "mlkit.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
        timeout=300,
    )


def test_promote_audit_lineage_card_rollback(exported, runs, tmp_path):
    listed = json.loads(mlkit("models", "--json").stdout)
    assert exported.tag in json.dumps(listed)
    alias = "cli-production"
    done = mlkit("promote", exported.tag, "--alias", alias, "--reason", "first model")
    assert done.returncode == 0, done.stderr
    assert exported.tag in done.stdout
    entries = json.loads(mlkit("audit", "--alias", alias, "--json").stdout)
    assert (
        len(entries) == 1 and entries[0]["to_tag"] == exported.tag and entries[0]["reason"] == "first model"
    )
    chain = json.loads(mlkit("lineage", exported.tag, "--json").stdout)
    assert json.dumps(chain).count(runs["logreg"].id) + json.dumps(chain).count(runs["gbm"].id) >= 1
    paths = mlkit("card", exported.tag, "--out-dir", tmp_path).stdout.split()
    assert [p.rsplit(".", 1)[1] for p in paths] == ["md", "html"]
    card_md = (tmp_path / paths[0].rsplit("/", 1)[1]).read_text()
    assert "95%" in card_md
    assert (
        "The leakage guards (train/test duplicates, single-feature leaks, time order) found nothing"
        in card_md
    )
    back = mlkit("rollback", "--alias", alias)
    assert back.returncode == 1 and "error:" in back.stderr, "nothing earlier to roll back to"


def test_quality_report_of_a_registered_dataset(tmp_path):
    out = tmp_path / "q.html"
    done = mlkit("quality", "breast_cancer", "--out", out)
    assert done.returncode == 0, done.stderr
    assert out.is_file() and "mean_radius" in out.read_text()
    # a real set with a feature that alone separates the classes: the report's leak check names it
    leaky = tmp_path / "penguins.html"
    done = mlkit("quality", "penguins", "--out", leaky)
    assert done.returncode == 0, done.stderr
    assert "The feature &#x27;flipper_length_mm&#x27; alone predicts &#x27;species&#x27;" in leaky.read_text()
    assert "<h2>Leaks</h2>" in out.read_text()


def test_export_prints_parity_latency_and_each_variant_kept_or_discarded(runs):
    done = mlkit("export", runs["logreg"].id, "--quantize", "int8", "--quantize", "fp16")
    assert done.returncode == 0, done.stderr
    tag = done.stdout.strip()
    assert tag.startswith("breast_cancer-train_tabular:") and "\n" not in tag
    err = done.stderr
    assert "parity on 143 holdout rows: max |dp| " in err and "label agreement 100.00%" in err
    for variant in ("reference", "onnx"):
        assert f"latency {variant}: batch 1: " in err and "batch 1024: " in err
    assert "fp16: discarded: not applicable: fp16 converts tensor operators; this graph computes with" in err
    int8 = [line for line in err.splitlines() if line.startswith("int8: ")]
    assert len(int8) == 1 and int8[0].split(": ")[1] in ("kept", "discarded") and len(int8[0]) > 30
    card = [line for line in err.splitlines() if line.startswith("model card: ")]  # every version gets one
    md = Path(card[0].split(": ", 1)[1].split(" and ")[0])
    assert md.is_file() and f"# Model card: {tag}" in md.read_text() and md.with_suffix(".html").is_file()
    listed = json.loads(mlkit("models", "--json").stdout)
    assert tag in json.dumps(listed)
