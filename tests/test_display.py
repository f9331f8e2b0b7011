"""Every object that shows itself in a notebook escapes what users typed: notebook names, parameters, errors."""

import datetime as dt

from mlkit.display import Grid, Raw, Styled
from mlkit.runs.store import RunRecord, leaderboard
from mlkit.runs.studies import compare_table
from mlkit.runs.sweep import SweepResult

HOSTILE = "<script>alert('x')</script>"


def record(run_id: str, **extra) -> RunRecord:
    fields = dict(
        id=run_id,
        notebook=f"nbs/experiments/{HOSTILE}.ipynb",
        notebook_hash="h",
        parameters={"note": HOSTILE, "C": 1.0},
        status="finished",
        created_at=dt.datetime.now(dt.UTC),
        run_dir="/nonexistent",
        output_path=f"/out/{HOSTILE}.ipynb",
        metrics={"auc": 0.9, HOSTILE: 1.0},
        primary_metric="auc",
        direction="maximize",
    )
    return RunRecord(**{**fields, **extra})


def test_no_object_lets_user_text_through_as_html():
    a, b = record("a"), record("b", status="failed", error=HOSTILE, parameters={"note": "other"})
    objects = [
        a,
        b,
        leaderboard([a, b], title=HOSTILE),
        compare_table([a, b]),
        SweepResult(
            HOSTILE, HOSTILE, {"complete": 1, "pruned": 0, "fail": 0}, 0.5, {HOSTILE: HOSTILE}, HOSTILE
        ),
        Grid([HOSTILE], [[Styled(HOSTILE, "red")], [HOSTILE]], title=HOSTILE, caption=HOSTILE),
    ]
    for obj in objects:
        page = obj._repr_html_()
        assert "<script" not in page, type(obj).__name__
        assert "&lt;script&gt;" in page, type(obj).__name__
        assert HOSTILE in str(obj), type(obj).__name__  # plain text shows it as typed


def test_rich_markup_in_user_text_is_not_interpreted():
    # a parameter that looks like rich markup must print as typed in the terminal table
    board = leaderboard([record("a", parameters={"tag": "[red]x[/red]"})])
    assert "tag=[red]x[/red]" in repr(board)


def test_raw_html_is_only_what_the_helpers_made():
    grid = Grid(["a"], [[Raw("<b>ok</b>")], ["<b>no</b>"]])
    page = grid._repr_html_()
    assert "<b>ok</b>" in page and "&lt;b&gt;no&lt;/b&gt;" in page
