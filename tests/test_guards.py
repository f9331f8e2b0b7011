"""Leakage and split guards, the data quality report and the churn generator, on realistic data."""

import json
import re
import warnings

import numpy as np
import pandas as pd
import pytest

from mlkit.core import ConfigError, ContractError
from mlkit.data.churn import churn_contracts, make_churn
from mlkit.data.contracts import validate
from mlkit.data.datasets import load_dataset
from mlkit.data.guards import (
    LeakWarning,
    check_split,
    duplicate_rows,
    leaky_features,
    single_feature_scores,
    time_split,
)
from mlkit.data.quality import profile, quality_report


@pytest.fixture(scope="module")
def churn():
    return make_churn(600, seed=3)


def test_time_split_orders_time_keeps_ties_together_and_honours_the_gap():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"at": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 50, 2000), unit="D")}
    )
    train, test, cutoff = time_split(frame, "at", test_size=0.25)
    assert train["at"].max() < cutoff == test["at"].min()
    assert len(train) + len(test) == len(frame)  # ties at the cutoff all went to test, nothing lost
    assert 0.15 < len(test) / len(frame) < 0.35
    train, test, _ = time_split(frame, "at", cutoff="2024-02-01", gap="10D")
    assert train["at"].max() < pd.Timestamp("2024-01-22") and test["at"].min() >= pd.Timestamp("2024-02-01")
    with pytest.raises(ConfigError, match="test_size must be between 0 and 1"):
        time_split(frame, "at", test_size=1.5)
    with pytest.raises(ConfigError, match="leaves 0 train"):
        time_split(frame.assign(at=pd.Timestamp("2024-01-01")), "at")
    with pytest.raises(ContractError, match="needs the time column 'when'"):
        time_split(frame, "when")


def test_duplicate_rows_across_train_and_test():
    train = pd.DataFrame({"x": [1, 2, 3, 4], "y": ["a", "b", "c", "d"]})
    test = pd.DataFrame({"x": [2.0, 5.0, 4.0], "y": ["b", "e", "d"]}, index=[7, 8, 9])
    (found,) = duplicate_rows(train, test)
    assert (found.details["rows"], found.details["sample"]) == (2, [7, 9])  # 2 and 2.0 are the same value
    assert json.loads(json.dumps(found.to_dict()))["details"]["share"] == pytest.approx(2 / 3)
    assert duplicate_rows(train, test, ["y"])[0].details["rows"] == 2
    assert duplicate_rows(train, test.assign(y="z")) == []
    with pytest.raises(ConfigError, match="columns present in both"):
        duplicate_rows(train, test, ["nope"])


def test_leak_guard_flags_the_leaky_column_of_the_churn_data_only(churn):
    frame = churn.labels.merge(churn.customers, on="customer_id")
    features = ["refund_issued", "age", "monthly_fee", "plan", "region", "customer_id"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = leaky_features(frame, "churned", features)
    assert [f.details["feature"] for f in found] == ["refund_issued"]
    assert found[0].details["auc"] > 0.98 and "after the outcome" in found[0].message
    assert [w.category for w in caught] == [LeakWarning]
    scores = single_feature_scores(frame, "churned", features)
    assert scores["customer_id"] < 0.7 and scores["plan"] < 0.8


def test_leak_guard_on_several_classes_and_bad_targets():
    rng = np.random.default_rng(1)
    y = rng.choice(["a", "b", "c"], 600)
    frame = pd.DataFrame({"y": y, "noise": rng.normal(size=600), "tell": np.where(y == "c", 1.0, 0.0)})
    with pytest.warns(LeakWarning, match="'tell' alone predicts 'y'"):
        assert [f.details["feature"] for f in leaky_features(frame, "y")] == ["tell"]
    with pytest.raises(ConfigError, match="classification target with 2 to 50 classes"):
        single_feature_scores(frame.assign(y=np.arange(600)), "y")
    with pytest.raises(ContractError, match="The target 'label' is not a column"):
        single_feature_scores(frame, "label")


def test_check_split_reports_every_guard(churn):
    frame = churn.labels.merge(churn.customers[["customer_id", "age", "monthly_fee"]], on="customer_id")
    shuffled = frame.sample(frac=1, random_state=0)
    train, test = shuffled.iloc[:2000], pd.concat([shuffled.iloc[2000:], shuffled.iloc[:25]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LeakWarning)
        found = check_split(train, test, "churned", timestamp="timestamp")
    assert [f.check for f in found] == ["time_order", "duplicate_rows", "single_feature_leak"]
    assert found[1].details["rows"] >= 25
    train, test, _ = time_split(frame.drop(columns="refund_issued"), "timestamp", gap="30D")
    found = check_split(train, test, "churned", ["age", "monthly_fee"], timestamp="timestamp")
    # a time split with honest features: no time overlap, no leak; the same customer's static features do
    # repeat across snapshots, and the guard rightly says so
    assert [f.check for f in found] == ["duplicate_rows"]


def test_quality_report_is_self_contained_small_and_atomic(churn, tmp_path):
    big = pd.concat(
        [churn.transactions] * 20, ignore_index=True
    )  # 10^5+ rows: the report holds bins, not rows
    out = quality_report(
        big, tmp_path / "reports" / "transactions.html", schema=churn_contracts()["transactions"]
    )
    page = out.read_text()
    assert re.findall(r"<script[^>]*\bsrc=", page) == []  # nothing to fetch: opens offline
    assert f"{len(big):,} rows" in page and "keeps its contract" in page
    assert out.stat().st_size < 5_500_000  # plotly itself is about 4.7 MB
    p = profile(churn.customers).set_index("column")
    assert p.loc["age", "missing"] == churn.customers["age"].isna().sum()
    assert p.loc["plan", "distinct"] == 3
    with pytest.raises(ContractError):
        quality_report("not a frame", tmp_path / "reports" / "bad.html")
    assert [f.name for f in out.parent.iterdir()] == ["transactions.html"]


def test_quality_report_lists_contract_violations(churn, tmp_path):
    customers = churn.customers.copy()
    customers.loc[0, "plan"] = "platinum"
    page = quality_report(customers, tmp_path / "c.html", schema=churn_contracts()["customers"]).read_text()
    assert "breaks its contract" in page and "platinum" in page


def test_churn_is_deterministic_and_keeps_its_contracts(churn):
    again = make_churn(600, seed=3)
    for name in ["customers", "transactions", "activity", "tickets", "labels"]:
        pd.testing.assert_frame_equal(getattr(churn, name), getattr(again, name))
    contracts = churn_contracts()
    validate(churn.customers, contracts["customers"])
    validate(churn.transactions, contracts["transactions"])
    # no activity row for a customer after they left, no label for a customer who already left
    left = churn.churn_at.rename_axis("customer_id").rename("left").reset_index()
    acts = churn.activity.merge(left, on="customer_id")
    assert not (acts["ts"] >= acts["left"]).any()
    labs = churn.labels.merge(left, on="customer_id")
    assert not (labs["timestamp"] >= labs["left"]).any()
    assert ((labs["left"] <= labs["timestamp"] + pd.Timedelta("30D")) == labs["churned"].astype(bool)).all()


def test_churn_registered_data_set():
    ds = load_dataset("churn")
    assert ds.target == "churned" and "refund_issued" not in ds.frame.columns
    assert ds.features == [
        "age",
        "monthly_fee",
        "plan",
        "region",
        "tx_count_30d",
        "spend_30d",
        "days_since_last_tx",
        "tickets_30d",
    ]
    numbers = ds.X.drop(columns=["plan", "region"])  # raw categories: encoded inside the model, not here
    assert (
        numbers.dtypes == "float64"
    ).all() and ds.X.isna().any().any()  # the missing values are part of it
    assert ds.X["region"].isna().any() and set(ds.X["plan"].dropna()) <= {"basic", "pro", "team"}
