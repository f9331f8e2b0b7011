"""After serving: the prediction log read back for drift and late labels, retraining through the gate, the bento."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from sklearn import metrics

from mlkit.data.datasets import load_dataset

ALIAS = "live"  # an alias of its own: other test modules move 'production'


@pytest.fixture(scope="module")
def live(exported, settings):
    from mlkit.registry.promotion import promote

    promote(exported.tag, ALIAS, reason="test", settings=settings)
    return exported.tag


def serve_in_process(settings, tag, frame):
    "Send `frame`'s rows through a serving core as the service would; the log is flushed on close."
    from mlkit.serving.core import ServingCore

    core = ServingCore.from_store(dataclasses.replace(settings, model=tag))
    features = [f["name"] for f in core.features]
    ids = []
    for i in range(0, len(frame), 25):
        ids += core.predict(
            core.parse(json.dumps({"records": frame.iloc[i : i + 25][features].to_dict("records")}))
        )["ids"]
    core.close()
    return ids


def test_drift_feedback_and_retrain_through_the_gate(live, settings, tmp_path):
    from mlkit.monitoring.drift import drift_check
    from mlkit.monitoring.feedback import feedback
    from mlkit.registry.aliases import aliases
    from mlkit.retrain import retrain

    # a prediction log of its own: the serving tests log other traffic for the same session model
    settings = dataclasses.replace(settings, monitor_dir=tmp_path / "monitor")
    frame = load_dataset("breast_cancer").frame
    stable = frame.sample(300, random_state=5)
    ids = serve_in_process(settings, live, stable)

    report, path = drift_check(ALIAS, settings=settings, out_dir=tmp_path)
    assert report.decision == "no drift", report
    assert "no drift" in path.read_text()
    assert retrain(ALIAS, if_drift=True, settings=settings)["action"] == "none"

    # late labels for the stable rows: the live metric is the metric of what was served
    labels = pd.DataFrame({"id": ids, "label": stable["target"].to_numpy()})
    labels.to_csv(tmp_path / "labels.csv", index=False)
    out = feedback(tmp_path / "labels.csv", ALIAS, settings=settings)
    assert out["labelled"] == 300 and out["unmatched"] == 0
    from mlkit.monitoring.predlog import log_folder, read_log

    logged = read_log(log_folder(live, settings)).set_index("__id__").loc[ids]
    proba = [p[1] for p in logged["__probabilities__"]]
    want = (
        metrics.roc_auc_score(stable["target"], proba)
        if out["metric"] == "roc_auc"
        else metrics.accuracy_score(stable["target"], logged["__prediction__"])
    )
    assert out["live"] == pytest.approx(want)
    assert out["training"] is not None

    shifted = frame.sample(400, random_state=6).assign(mean_smoothness=lambda d: d["mean_smoothness"] * 1.4)
    serve_in_process(settings, live, shifted)
    report, _ = drift_check(ALIAS, settings=settings, out_dir=tmp_path)
    assert (report.decision, report.drifted) == ("drift", ["mean_smoothness"])

    # drift: the notebook is rerun on today's data and its export offered to the gate; the same data and
    # parameters give the same metric, which does not beat the holder, so the alias stays where it was
    out = retrain(ALIAS, if_drift=True, settings=settings)
    assert out["drifted"] == ["mean_smoothness"]
    assert out["action"] == "refused", out
    assert out["candidate"] != live
    card = Path(out["card"])  # the new version got its model card
    assert card.is_file() and out["candidate"] in card.read_text()
    assert "metric" in out["reason"]
    assert aliases(settings)[ALIAS] == live


def test_cli_drift_and_feedback_errors_say_what_to_do(live, settings, tmp_path):
    serve_in_process(settings, live, load_dataset("breast_cancer").frame.head(5))  # a log to give labels for
    bad = tmp_path / "labels.csv"
    bad.write_text("x,y\n1,2\n")
    r = subprocess.run(
        [sys.executable, "-m", "mlkit.cli", "feedback", str(bad), "--model", ALIAS],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and "needs the columns id and label" in r.stderr, r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "mlkit.cli", "drift", "--model", "no-such-alias"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and "mlkit promote" in r.stderr, r.stderr


def test_build_packs_service_model_lineage_and_container_settings(live, settings, exported):
    import bentoml

    from mlkit.serving.bento import build_bento

    tag, path = build_bento(ALIAS, settings)
    bento = bentoml.bentos.get(tag)
    assert [str(m.tag) for m in bento.info.models] == [live]
    meta = bentoml.models.get(live).info.metadata
    assert bento.info.labels["run_id"] == meta["run_id"]
    assert bento.info.labels["notebook_hash"] == meta["notebook_hash"]
    dockerfile = Path(
        bento.path_of("env/docker/Dockerfile")
    ).read_text()  # what `bentoml containerize` builds
    assert "python:3.11" in dockerfile or "python3.11" in dockerfile, dockerfile[:400]
    envs = {e.name: e.value for e in bento.info.envs}
    assert envs["MLKIT_MODEL"] == live and envs["MLKIT_HOST"] == "0.0.0.0"
    src = Path(bento.path_of("src"))
    assert (src / "mlkit" / "serving" / "service.py").is_file() and (src / "settings.ini").is_file()
    assert (src / "mlkit" / "registry" / "resolve.py").is_file()  # what serving imports comes along
    assert (
        not (src / "mlkit" / "cli.py").exists()
        and not (src / "mlkit" / "cli_data.py").exists()
        and not (src / "mlkit" / "cli_ab.py").exists()
        and not (src / "mlkit" / "cli_registry.py").exists()
        and not (src / "mlkit" / "demo.py").exists()
    )
    assert "onnxruntime==" in Path(bento.path_of("env/python/requirements.in")).read_text()
    assert path.read_text().startswith("service: mlkit.serving:ModelService")
    path.unlink()
