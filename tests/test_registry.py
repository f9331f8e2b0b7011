"""Aliases, the promotion gate, the audit log, rollback and lineage, against the session's model store and run
database, a fresh SQLite file and a real PostgreSQL server."""

import dataclasses
import getpass
import importlib.metadata
import multiprocessing
import re
import subprocess
import threading
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import ROOT

from mlkit.core import ConfigError, NotFound
from mlkit.db import APPEND_ONLY, audit_table
from mlkit.registry import promotion
from mlkit.registry.aliases import AliasChange, PromotionError, aliases, audit_log
from mlkit.registry.lineage import lineage
from mlkit.registry.promotion import promote, rollback
from mlkit.registry.resolve import resolve_model
from mlkit.registry.store import get_model, save_model
from mlkit.registry.versions import list_versions
from mlkit.runs.runner import file_hash, notebook_hash

FP = "sha256:" + "a" * 64


def meta(score=0.99, fp=FP, latency=0.4, agreement=1.0, max_diff=3e-8, run="r-test", **extra) -> dict:
    "Metadata as export_run stores it, with the figures the gate reads."
    return {
        "run_id": run,
        "primary_metric": "roc_auc",
        "metrics": {"roc_auc": score, "accuracy": score - 0.03},
        "data": {
            "breast_cancer": {
                "fingerprint": fp,
                "rows": 569,
                "contract": {"name": "breast_cancer", "passed": True},
            }
        },
        "holdout": {"rows": 143, "fingerprint": "sha256:" + "c" * 64},
        "parity": {
            "n_rows": 143,
            "max_abs_diff": max_diff,
            "label_agreement": agreement,
            "atol": 1e-4,
            "min_agreement": 0.99,
        },
        "latency_ms": {"onnx": {"1": latency, "32": 1.1, "1024": 9.0}},
        **extra,
    }


def unique(prefix: str) -> str:
    "A model name or alias no other test uses (the model store and run database are shared by the session)."
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def version(settings, name: str, **kw) -> str:
    return save_model(name, {"model.onnx": uuid.uuid4().bytes}, meta(**kw), settings)


def state(alias: str, settings) -> tuple:
    "Everything a refused change must leave as it was."
    return aliases(settings).get(alias), [e.to_json() for e in audit_log(alias, settings)]


@pytest.fixture
def sqlite_file(settings, tmp_path):
    "The session's settings with a run database of its own: a fresh SQLite file."
    return dataclasses.replace(settings, run_db=f"sqlite:///{tmp_path}/registry.db")


@pytest.fixture
def postgres(settings, postgres_url):
    "The session's settings with the run database on a real PostgreSQL server."
    return dataclasses.replace(settings, run_db=postgres_url)


@pytest.fixture(params=["sqlite", "postgres"])
def any_db(request):
    "Each test using it runs against a fresh SQLite file and against PostgreSQL."
    return request.getfixturevalue("sqlite_file" if request.param == "sqlite" else "postgres")


# ---- the gate


def test_gate_passes_and_the_alias_moves_with_its_audit_entry(settings):
    name, alias = unique("clf"), unique("production")
    v1, v2 = version(settings, name, score=0.990), version(settings, name, score=0.995)
    first = promote(v1, alias, reason="first release", who="ada", settings=settings)
    assert (first.tag, first.previous, first.entry.revision, first.entry.forced) == (v1, None, 1, False)
    assert [c.name for c in first.checks if c.passed] == ["metric", "parity", "contract", "latency"]
    assert "no current holder to beat" in first.checks[0].detail
    second = promote(v2, alias, reason="better AUC", who="bob", settings=settings)
    assert (second.tag, second.previous, second.entry.revision) == (v2, v1, 2)
    assert "roc_auc 0.9950 beats the holder's 0.9900 by 0.005" in second.checks[0].detail
    assert resolve_model(alias, settings).tag == v2
    log = audit_log(alias, settings)
    assert [(e.action, e.from_tag, e.to_tag, e.who, e.reason, e.forced) for e in log] == [
        ("promote", None, v1, "ada", "first release", False),
        ("promote", v1, v2, "bob", "better AUC", False),
    ]
    assert log[1].metrics["candidate"]["roc_auc"] == 0.995 and log[1].metrics["holder"]["roc_auc"] == 0.990
    assert log[1].metrics["primary_metric"] == "roc_auc" and log[1].metrics["direction"] == "maximize"
    # promoting the holder again changes nothing and writes nothing
    again = promote(v2, alias, settings=settings)
    assert not again.changed and len(audit_log(alias, settings)) == 2


def test_a_real_export_passes_the_gate(exported, settings):
    alias = unique("champion")
    done = promote(exported.tag, alias, settings=settings)
    assert done.changed and all(c.passed for c in done.checks), done.checks
    latency = [c for c in done.checks if c.name == "latency"][0].detail
    assert latency.startswith("batch-1 ONNX latency ") and latency.endswith("<= budget 50 ms")


FAILURES = {
    # case: (candidate's metadata, promote keyword arguments, failing checks, text that must be in the message)
    "worse metric": (dict(score=0.980), {}, ["metric"], "roc_auc 0.9800 does not beat the holder's 0.9900 by the margin 0"),
    "a tie": (dict(score=0.990), {}, ["metric"], "improvement +0"),
    "better, not by the margin": (dict(score=0.992), {"margin": 0.005}, ["metric"], "by the margin 0.005 (higher is better): improvement +0.002"),
    "other data": (dict(score=0.999, fp="sha256:" + "b" * 64), {}, ["metric"], "not evaluated on the same data (candidate: breast_cancer sha256:bbbbbbbbbbbb…; holder: breast_cancer sha256:aaaaaaaaaaaa…)"),
    "same data, other holdout": (dict(score=0.999, holdout={"rows": 143, "fingerprint": "sha256:" + "d" * 64}), {}, ["metric"], "same data, other holdout rows (candidate: 143 rows sha256:dddddddddddd…; holder: 143 rows sha256:cccccccccccc…), so their roc_auc values cannot be compared"),
    "data past its contract": (dict(score=0.995, contract_passed=False), {}, ["contract"], "contract: the training data ['breast_cancer'] did not come through its contract (mlkit.data.contracts.validate)"),
    "parity labels": (dict(score=0.995, agreement=0.97), {}, ["parity"], "label agreement 97.00% < required 99.00%"),
    "parity probabilities": (dict(score=0.995, max_diff=2e-3), {}, ["parity"], "max |Δp| 0.002 > atol 0.0001"),
    "no data fingerprints": (dict(score=0.995, fp=None), {}, ["metric", "contract"], "contract: no data fingerprints recorded"),
    "slow": (dict(score=0.995, latency=72.4), {}, ["latency"], "batch-1 ONNX latency 72.4 ms > budget 50 ms"),
    "slow for a tighter budget": (dict(score=0.995, latency=0.4), {"latency_budget_ms": 0.1}, ["latency"], "batch-1 ONNX latency 0.4 ms > budget 0.1 ms"),
    "no latency figures": (dict(score=0.995, latency=None), {}, ["latency"], "latency: no latency figures: re-export the model"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(FAILURES))
def test_a_failed_gate_names_the_check_with_its_numbers_and_changes_nothing(case, settings):
    candidate, kwargs, failing, text = FAILURES[case]
    name, alias = unique("clf"), unique("production")
    holder = version(settings, name, score=0.990)
    promote(holder, alias, settings=settings)
    fields = meta(**{k: v for k, v in candidate.items() if v is not None})
    if candidate.get("fp", "") is None:
        fields.pop("data")
    if candidate.get("latency", "") is None:
        fields.pop("latency_ms")
    if candidate.get("contract_passed") is False:
        fields.pop("contract_passed")
        fields["data"]["breast_cancer"]["contract"]["passed"] = False
    bad = save_model(name, {"model.onnx": b"x"}, fields, settings)
    before = state(alias, settings)
    with pytest.raises(PromotionError) as refused:
        promote(bad, alias, settings=settings, **kwargs)
    message = str(refused.value)
    assert message.startswith(f"Promotion of {bad} to '{alias}' refused: {len(failing)} of 4 checks failed: ")
    failed_part = message.split(" checks failed: ", 1)[1]
    assert re.findall(r"(?:^|; )(metric|parity|contract|latency): ", failed_part) == failing
    assert text in message, message
    assert "Nothing was changed" in message
    assert state(alias, settings) == before


def test_minimised_metrics_must_go_down(settings):
    name, alias = unique("clf"), unique("production")
    loss = lambda v: dict(primary_metric="log_loss", metrics={"log_loss": v}, direction="minimize")  # noqa: E731
    holder = save_model(name, {"model.onnx": b"1"}, {**meta(), **loss(0.30)}, settings)
    worse = save_model(name, {"model.onnx": b"2"}, {**meta(), **loss(0.35)}, settings)
    better = save_model(name, {"model.onnx": b"3"}, {**meta(), **loss(0.25)}, settings)
    promote(holder, alias, settings=settings)
    with pytest.raises(
        PromotionError, match=r"log_loss 0.3500 does not beat the holder's 0.3000 .*lower is better"
    ):
        promote(worse, alias, settings=settings)
    assert promote(better, alias, settings=settings).tag == better


def test_force_skips_the_gate_and_is_recorded_as_forced_with_the_failed_checks(settings):
    name, alias = unique("clf"), unique("production")
    holder, slow_and_worse = (
        version(settings, name, score=0.99),
        version(settings, name, score=0.98, latency=72.4),
    )
    promote(holder, alias, settings=settings)
    forced = promote(slow_and_worse, alias, force=True, reason="hotfix", who="ada", settings=settings)
    assert forced.tag == slow_and_worse == resolve_model(alias, settings).tag
    entry = audit_log(alias, settings)[-1]
    assert (entry.forced, entry.reason, entry.who, entry.from_tag) == (True, "hotfix", "ada", holder)
    failed = {c["name"]: c["detail"] for c in entry.checks if not c["passed"]}
    assert sorted(failed) == ["latency", "metric"]
    assert (
        "72.4 ms > budget 50 ms" in failed["latency"]
        and "does not beat the holder's 0.9900" in failed["metric"]
    )
    assert "(forced: gate skipped)" in str(forced)


def test_who_defaults_to_the_os_user(settings):
    done = promote(version(settings, unique("clf")), unique("production"), settings=settings)
    assert done.entry.who == getpass.getuser()


def test_unknown_tags_and_bad_alias_names_are_refused(settings):
    with pytest.raises(NotFound, match="No model 'clf_nope:nope'"):
        promote("clf_nope:nope", "production", settings=settings)
    with pytest.raises(ConfigError, match="An alias must be a letter"):
        promote(version(settings, unique("clf")), "prod:1", settings=settings)
    with pytest.raises(
        NotFound, match=r"No alias 'never_promoted' .*mlkit promote TAG --alias never_promoted"
    ):
        resolve_model("never_promoted", settings)


# ---- rollback


def test_rollback_steps_back_through_the_versions_the_alias_held(settings):
    name, alias = unique("clf"), unique("production")
    a, b, c, d = (version(settings, name, score=s) for s in (0.90, 0.91, 0.92, 0.93))
    for tag in (a, b, c):
        promote(tag, alias, settings=settings)
    back = rollback(alias, reason="c misbehaves", who="ada", settings=settings)
    assert (back.previous, back.tag, resolve_model(alias, settings).tag) == (c, b, b)
    assert (back.entry.action, back.entry.reason, back.entry.revision) == ("rollback", "c misbehaves", 4)
    promote(d, alias, settings=settings)
    assert rollback(alias, settings=settings).tag == b  # d came after the rollback: back to b, not c
    assert rollback(alias, settings=settings).tag == a
    before = state(alias, settings)
    with pytest.raises(
        PromotionError, match=f"'{alias}' has no earlier version to roll back to: {a} is the first"
    ):
        rollback(alias, settings=settings)
    assert state(alias, settings) == before
    assert [(e.action, e.from_tag, e.to_tag) for e in audit_log(alias, settings)][3:] == [
        ("rollback", c, b),
        ("promote", b, d),
        ("rollback", d, b),
        ("rollback", b, a),
    ]


def test_rollback_to_a_version_gone_from_the_store_is_refused(settings):
    import bentoml

    name, alias = unique("clf"), unique("production")
    old, new = version(settings, name, score=0.90), version(settings, name, score=0.95)
    promote(old, alias, settings=settings)
    promote(new, alias, settings=settings)
    bentoml.models.delete(old)
    before = state(alias, settings)
    with pytest.raises(
        PromotionError, match=f"Cannot roll '{alias}' back to {old}: it is no longer in the model store"
    ):
        rollback(alias, settings=settings)
    assert state(alias, settings) == before
    with pytest.raises(NotFound, match="No alias 'never_promoted' to roll back"):
        rollback("never_promoted", settings=settings)


# ---- the audit log


def test_the_audit_log_is_append_only(any_db):
    s = any_db
    name, alias = unique("clf"), unique("production")
    a, b = version(s, name, score=0.90), version(s, name, score=0.95)
    promote(a, alias, settings=s)
    promote(b, alias, settings=s)
    before = [e.to_json() for e in audit_log(settings=s)]
    engine = sa.create_engine(s.run_db)
    try:
        for statement in (audit_table.update().values(reason="rewritten"), audit_table.delete()):
            with pytest.raises(sa.exc.DatabaseError, match=APPEND_ONLY):
                with engine.begin() as con:
                    con.execute(statement)
    finally:
        engine.dispose()
    assert [e.to_json() for e in audit_log(settings=s)] == before
    rollback(alias, settings=s)
    after = audit_log(settings=s)
    assert [e.to_json() for e in after[: len(before)]] == before  # earlier entries untouched
    assert after[-1].id > before[-1]["id"] and after[-1].action == "rollback"


# ---- concurrency


def _waiting(real, barrier):
    "`real`, then wait at `barrier`: every racer has read the same state and passed its checks; now they commit."

    def then_wait(*args, **kwargs):
        result = real(*args, **kwargs)
        barrier.wait()
        return result

    return then_wait


def _race(calls, wait_after=("gate_checks",)):
    "Run `calls` in threads that all get past the functions named in `wait_after` before any commits."
    barrier = threading.Barrier(len(calls), timeout=60)
    outcomes = [None] * len(calls)

    def run(i, call):
        try:
            outcomes[i] = call()
        except Exception as err:  # noqa: BLE001 - the outcome is what the test inspects
            outcomes[i] = err

    with pytest.MonkeyPatch.context() as mp:
        for fname in wait_after:
            mp.setattr(promotion, fname, _waiting(getattr(promotion, fname), barrier))
        threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    return outcomes


@pytest.mark.parametrize("new_alias", [False, True], ids=["existing alias", "new alias"])
def test_racing_promotions_leave_one_consistent_result(any_db, new_alias):
    s = any_db
    name, alias = unique("clf"), unique("production")
    holder = version(s, name, score=0.90)
    if not new_alias:
        promote(holder, alias, settings=s)
    b, c = version(s, name, score=0.95), version(s, name, score=0.96)
    outcomes = _race([lambda: promote(b, alias, settings=s), lambda: promote(c, alias, settings=s)])
    won = [o for o in outcomes if isinstance(o, AliasChange)]
    lost = [o for o in outcomes if isinstance(o, PromotionError)]
    assert len(won) == 1 and len(lost) == 1, outcomes
    assert f"'{alias}' changed while this promote was being checked" in str(lost[0])
    assert "Nothing was changed by this call" in str(lost[0])
    winner = won[0].tag
    assert resolve_model(alias, s).tag == winner
    log = audit_log(alias, s)
    expected = [(None, winner, 1)] if new_alias else [(None, holder, 1), (holder, winner, 2)]
    assert [(e.from_tag, e.to_tag, e.revision) for e in log] == expected


def test_a_rollback_racing_a_promotion_leaves_one_consistent_result(any_db):
    s = any_db
    name, alias = unique("clf"), unique("production")
    a, b, c = version(s, name, score=0.90), version(s, name, score=0.95), version(s, name, score=0.96)
    promote(a, alias, settings=s)
    promote(b, alias, settings=s)
    # the rollback waits once it has read the log, the promotion once it has passed its gate
    outcomes = _race(
        [lambda: rollback(alias, settings=s), lambda: promote(c, alias, settings=s)],
        wait_after=("gate_checks", "history"),
    )
    lost = [o for o in outcomes if isinstance(o, PromotionError)]
    assert len(lost) == 1 and sum(isinstance(o, AliasChange) for o in outcomes) == 1, outcomes
    moves = [(e.action, e.from_tag, e.to_tag, e.revision) for e in audit_log(alias, s)]
    if isinstance(outcomes[0], AliasChange):  # the rollback won
        assert "changed while this promote was being checked" in str(lost[0])
        assert (resolve_model(alias, s).tag, moves[2:]) == (a, [("rollback", b, a, 3)])
    else:
        assert "changed while this rollback was being checked" in str(lost[0])
        assert (resolve_model(alias, s).tag, moves[2:]) == (c, [("promote", b, c, 3)])


def _promote_in_a_process(run_db: str, tag: str, alias: str, barrier, queue) -> None:
    "Child process: promote `tag`, waiting at `barrier` once past the gate, so every process commits at once."
    import dataclasses as dc

    from mlkit.core import get_settings
    from mlkit.registry import promotion

    promotion.gate_checks = _waiting(promotion.gate_checks, barrier)
    s = dc.replace(get_settings(), run_db=run_db)
    try:
        queue.put((tag, "ok", str(promotion.promote(tag, alias, settings=s))))
    except PromotionError as err:
        queue.put((tag, "lost" if "changed while this promote" in str(err) else "refused", str(err)))
    except Exception as err:  # noqa: BLE001 - reported to the test, which fails on it
        queue.put((tag, "error", repr(err)))


def test_promotions_racing_from_separate_processes_leave_one_consistent_result(any_db):
    s = any_db
    name, alias = unique("clf"), unique("production")
    holder = version(s, name, score=0.90)
    promote(holder, alias, settings=s)
    candidates = [version(s, name, score=0.91 + i / 100) for i in range(4)]  # each beats the holder
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(len(candidates), timeout=120), ctx.Queue()
    procs = [
        ctx.Process(target=_promote_in_a_process, args=(s.run_db, t, alias, barrier, queue))
        for t in candidates
    ]
    for p in procs:
        p.start()
    outcomes = sorted((kind, tag) for tag, kind, _ in (queue.get(timeout=240) for _ in procs))
    for p in procs:
        p.join(60)
    assert [kind for kind, _ in outcomes] == ["lost", "lost", "lost", "ok"], outcomes
    winner = outcomes[-1][1]
    assert resolve_model(alias, s).tag == winner
    assert [(e.from_tag, e.to_tag, e.revision) for e in audit_log(alias, s)] == [
        (None, holder, 1),
        (holder, winner, 2),
    ]


# ---- listing


def test_list_versions_shows_aliases_and_key_metrics(settings):
    name = unique("clf")
    a, b = (
        version(settings, name, score=0.90),
        version(settings, name, score=0.95, latency=72.4, agreement=0.5),
    )
    champion, challenger = unique("champion"), unique("challenger")
    promote(a, champion, settings=settings)
    promote(b, challenger, force=True, settings=settings)
    versions = list_versions(name, settings)
    assert [v.tag for v in versions] == [b, a]
    assert [v.aliases for v in versions] == [[challenger], [champion]]
    assert [(v.primary_metric, v.score, v.parity_ok, v.latency_ms) for v in versions] == [
        ("roc_auc", 0.95, False, 72.4),
        ("roc_auc", 0.90, True, 0.4),
    ]
    assert versions[0].to_json()["data"] == {"breast_cancer": FP}


# ---- lineage


def test_lineage_of_a_real_export_is_complete(exported, runs, settings):
    chain = lineage(exported.tag, settings)
    model_meta = get_model(exported.tag, settings).info.metadata
    run = next(r for r in runs.values() if r.id == model_meta["run_id"])
    assert chain.complete, chain.missing
    assert (chain.run["id"], chain.run["status"]) == (run.id, "finished")
    nb = chain.notebook
    assert (nb["path"], nb["hash"], nb["executed"]) == (run.notebook, run.notebook_hash, run.output_path)
    assert nb["executed_exists"] and Path(run.output_path).is_file()
    assert nb["current_hash"] == notebook_hash(ROOT / run.notebook) and nb["matches"] is True
    assert chain.parameters == run.parameters
    assert chain.data == {
        k: {"fingerprint": v["fingerprint"], "rows": v["rows"]} for k, v in run.data.items()
    }
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    assert chain.git["commit"] == head and isinstance(chain.git["dirty"], bool)
    # taken when the run started, from its record: the code and packages that trained the model
    assert chain.recorded_at == "run" and (chain.git, chain.packages) == (run.git, run.packages)
    assert chain.packages["scikit-learn"] == importlib.metadata.version("scikit-learn")
    assert chain.packages["onnxruntime"] == importlib.metadata.version("onnxruntime")
    text = chain.to_text()
    for part in (
        run.id,
        run.notebook_hash,
        run.output_path,
        f"commit {head}",
        "scikit-learn ",
        "breast_cancer: 569 rows",
    ):
        assert part in text, part
    assert "input notebook unchanged since the run" in text
    # the executed copy: its file's hash at the run's end, checked again now
    assert (
        nb["executed_hash"] == run.output_hash == file_hash(run.output_path)
        and nb["executed_matches"] is True
    )
    assert f"executed copy's content hash {run.output_hash} (unchanged since the run)" in text
    executed = Path(run.output_path)
    kept = executed.read_bytes()
    try:
        executed.write_bytes(kept.replace(b'"cells"', b'"cells" ', 1))  # one byte more: a touched output
        again = lineage(exported.tag, settings)
        assert again.notebook["executed_matches"] is False
        assert "(CHANGED since the run)" in again.to_text()
    finally:
        executed.write_bytes(kept)


def test_lineage_says_what_was_not_recorded_and_notices_a_changed_notebook(settings, tmp_path):
    import nbformat

    bare = save_model(unique("clf"), {"model.onnx": b"1"}, {"run_id": "no-such-run"}, settings)
    chain = lineage(bare, settings)
    assert chain.missing == ["run", "notebook", "parameters", "data", "git", "packages"]
    assert not chain.complete and "not in the run database" in chain.to_text()
    assert chain.to_text().count("not recorded") >= 4
    # a model whose input notebook changed since its run
    nb_path = tmp_path / "nbs" / "train.ipynb"
    nb_path.parent.mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("C = 1.0")]), nb_path)
    recorded = notebook_hash(nb_path)
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("C = 2.0")]), nb_path)
    fields = meta(notebook="nbs/train.ipynb", notebook_hash=recorded, parameters={"C": 1.0}, git={"commit": "abc", "dirty": True}, packages={"numpy": "2.0"})  # fmt: skip
    changed = lineage(
        save_model(unique("clf"), {"model.onnx": b"2"}, fields, settings),
        dataclasses.replace(settings, root=tmp_path),
    )
    assert changed.notebook["matches"] is False and changed.notebook["current_hash"] == notebook_hash(nb_path)
    assert (
        f"input notebook CHANGED since the run: its hash is now {notebook_hash(nb_path)}" in changed.to_text()
    )
    assert "commit abc (dirty: uncommitted changes)" in changed.to_text()
