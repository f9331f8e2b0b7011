"""The feature store on real Parquet files: point-in-time correctness against pandas' merge_asof, the leakage
guard, TTL, late-arriving rows, online = latest through the same query, refusals that write nothing, and a join
larger than DuckDB's memory limit that completes by spilling to disk."""

import json
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest

from mlkit.core import ConfigError, ContractError, NotFound
from mlkit.data.features import FeatureStore, FeatureView

T0 = pd.Timestamp("2024-01-01")


def random_rows(n: int, entities: int, days: int, seed: int) -> pd.DataFrame:
    "Feature rows with unique (entity, time) keys; each value encodes its own event time, to spot a leak."
    rng = np.random.default_rng(seed)
    rows = pd.DataFrame(
        {
            "customer_id": rng.integers(0, entities, n),
            "ts": T0 + pd.to_timedelta(rng.integers(0, days * 86400, n), unit="s"),
        }
    ).drop_duplicates(["customer_id", "ts"], ignore_index=True)
    rows["seen_at"] = (rows["ts"] - T0).dt.total_seconds()  # the value is its own timestamp
    rows["score"] = rng.normal(size=len(rows))
    return rows


def random_labels(n: int, entities: int, days: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "customer_id": rng.integers(0, entities + 5, n),  # a few unknown entities
            "timestamp": T0 + pd.to_timedelta(rng.integers(0, days * 86400, n), unit="s"),
            "label": rng.integers(0, 2, n),
        }
    )


def reference(labels, rows, features, ttl=None, timestamp="timestamp"):
    "pandas merge_asof: the same semantics, computed independently."
    left = labels.reset_index(drop=True).assign(__row=lambda d: np.arange(len(d))).sort_values(timestamp)
    right = rows.rename(columns={"ts": "__event"}).sort_values("__event")
    out = pd.merge_asof(left, right, left_on=timestamp, right_on="__event", by="customer_id")
    if ttl is not None:
        out.loc[out["__event"] < out[timestamp] - pd.Timedelta(ttl), features] = np.nan
    return out.sort_values("__row").reset_index(drop=True)


@pytest.fixture()
def store(tmp_path):
    with FeatureStore(tmp_path / "store") as store:
        yield store


VIEW = FeatureView("activity", "customer_id", "ts", ["seen_at", "score"])


def test_point_in_time_matches_merge_asof_and_never_leaks(store):
    rows = random_rows(20_000, 300, 90, seed=1)
    labels = random_labels(5_000, 300, 90, seed=2)
    store.write(VIEW, rows)
    got = store.get_training_frame(labels, ["activity"])
    pd.testing.assert_frame_equal(got[list(labels.columns)], labels)  # labels untouched, in order
    ref = reference(labels, rows, ["seen_at", "score"])
    np.testing.assert_array_equal(got["score"].to_numpy(float), ref["score"].to_numpy(float))
    label_age = (labels["timestamp"] - T0).dt.total_seconds()
    found = got["seen_at"].notna()
    assert found.mean() > 0.8
    assert (got.loc[found, "seen_at"] <= label_age[found]).all()  # never a value from after the label


def test_a_feature_written_after_the_label_time_never_appears(store):
    store.write(VIEW, pd.DataFrame({"customer_id": [1], "ts": [T0], "seen_at": [0.0], "score": [1.0]}))
    labels = pd.DataFrame({"customer_id": [1, 1], "timestamp": [T0 + pd.Timedelta(hours=1), T0]})
    before = store.get_training_frame(labels, ["activity:score"])
    # a later write: one value a second after the first label, one exactly at it
    store.write(
        VIEW,
        pd.DataFrame(
            {
                "customer_id": [1, 1],
                "ts": [T0 + pd.Timedelta(hours=1, seconds=1), T0 + pd.Timedelta(hours=1)],
                "seen_at": [3601.0, 3600.0],
                "score": [99.0, 2.0],
            }
        ),
    )
    after = store.get_training_frame(labels, ["activity:score"])
    assert before["score"].tolist() == [1.0, 1.0]
    assert after["score"].tolist() == [2.0, 1.0]  # at-or-before takes the value at exactly the label time
    assert 99.0 not in after["score"].tolist()


def test_ttl_boundaries(store):
    view = FeatureView("activity", "customer_id", "ts", ["seen_at", "score"], ttl="7D")
    store.write(view, pd.DataFrame({"customer_id": [1], "ts": [T0], "seen_at": [0.0], "score": [5.0]}))
    at = [T0, T0 + pd.Timedelta("7D"), T0 + pd.Timedelta("7D") + pd.Timedelta("1us"), T0 - pd.Timedelta("1s")]
    got = store.get_training_frame(pd.DataFrame({"customer_id": 1, "timestamp": at}), ["score"])
    assert got["score"].fillna(-1).tolist() == [5.0, 5.0, -1, -1]  # exactly ttl old still counts; older not


def test_ttl_on_random_data_matches_reference(store):
    rows = random_rows(10_000, 100, 60, seed=3)
    labels = random_labels(3_000, 100, 60, seed=4)
    store.write(FeatureView("activity", "customer_id", "ts", ["seen_at", "score"], ttl="2D"), rows)
    got = store.get_training_frame(labels, ["activity"])
    ref = reference(labels, rows, ["seen_at", "score"], ttl="2D")
    np.testing.assert_array_equal(got["score"].to_numpy(float), ref["score"].to_numpy(float))
    assert 0.05 < got["score"].isna().mean() < 0.95  # the TTL does cut values off


def test_late_arriving_rows_are_used_from_their_arrival(store):
    view = FeatureView("tickets", "customer_id", "week", ["n"], created="arrived")
    store.write(
        view,
        pd.DataFrame(
            {
                "customer_id": [1, 1],
                "week": [T0, T0 + pd.Timedelta("7D")],
                "arrived": [T0 + pd.Timedelta("7D"), pd.NaT],  # the second arrived on time
                "n": [3, 4],
            }
        ),
    )
    at = [T0 + pd.Timedelta("6D"), T0 + pd.Timedelta("7D")]
    got = store.get_training_frame(pd.DataFrame({"customer_id": [1, 1], "timestamp": at}), ["tickets"])
    assert got["n"].fillna(-1).tolist() == [-1, 4]


def test_online_is_the_latest_value_by_the_same_query(store):
    rows = random_rows(5_000, 50, 30, seed=5)
    store.write(VIEW, rows)
    online = store.get_online_features(list(range(53)), ["activity"])  # at = now: everything is in the past
    latest = rows.sort_values("ts").groupby("customer_id").tail(1).set_index("customer_id")
    expected = latest["score"].reindex(range(53))
    np.testing.assert_array_equal(online["score"].to_numpy(float), expected.to_numpy(float))
    assert online["customer_id"].tolist() == list(range(53))
    # serving at a moment = training on a label at that moment
    at = T0 + pd.Timedelta("12D")
    then = store.get_online_features([3, 7, 7], ["activity:score"], at=at)
    train = store.get_training_frame(
        pd.DataFrame({"customer_id": [3, 7, 7], "timestamp": at}), ["activity:score"]
    )
    assert then["score"].tolist() == train["score"].tolist()


def test_concurrent_online_requests_share_one_store(store):
    store.write(VIEW, random_rows(2_000, 30, 30, seed=19))
    expected = store.get_online_features(list(range(30)), ["activity:score"])["score"].tolist()
    with ThreadPoolExecutor(4) as pool:
        answers = list(
            pool.map(lambda _: store.get_online_features(list(range(30)), ["activity:score"]), range(24))
        )
    assert all(a["score"].tolist() == expected for a in answers)
    scratch = store._scratch.name
    store.close()  # releases DuckDB and its spill folder; the store opens them again on the next query
    assert not os.path.exists(scratch)
    with store:
        assert store.get_online_features([0], ["activity:score"])["score"].tolist() == expected[:1]
    assert store._db is None


def test_several_views_and_entities(store):
    store.write(VIEW, random_rows(1_000, 20, 30, seed=6))
    products = pd.DataFrame({"product_id": [10, 11], "ts": [T0, T0], "price": [1.5, 2.5]})
    store.write(FeatureView("products", "product_id", "ts", ["price"]), products)
    labels = random_labels(200, 20, 30, seed=7).assign(product_id=lambda d: np.where(d.index % 2, 10, 11))
    labels.index = np.arange(200)[::-1]  # a non-default index is kept
    got = store.get_training_frame(labels, ["activity:score", "price"])
    assert got.index.tolist() == labels.index.tolist()
    assert got["price"].tolist() == [1.5 if p == 10 else 2.5 for p in labels["product_id"]]
    with pytest.raises(ConfigError, match="pass a frame of those keys"):
        store.get_online_features([1, 2], ["activity:score", "price"])
    both = store.get_online_features(
        pd.DataFrame({"customer_id": [1], "product_id": [11]}), ["score", "price"]
    )
    assert both["price"].tolist() == [2.5]


def test_late_arriving_view_next_to_others_matches_reference(store):
    "Several views at once, one with arrival times (and ties in them), against a pandas reference."
    rng = np.random.default_rng(15)
    store.write(VIEW, random_rows(3_000, 40, 60, seed=16))
    late = random_rows(3_000, 40, 60, seed=17)[["customer_id", "ts", "score"]].rename(columns={"score": "n"})
    late["arrived"] = late["ts"] + pd.to_timedelta(rng.choice([0, 3, 7], len(late)), unit="D")
    late.loc[::5, "arrived"] = pd.NaT  # on time
    store.write(FeatureView("late", "customer_id", "ts", ["n"], created="arrived"), late)
    labels = random_labels(2_000, 40, 60, seed=18)
    for n in (2_000, 20):  # DuckDB plans small and large joins differently
        got = store.get_training_frame(labels.head(n), ["activity:score", "late"])
        usable = late.assign(__available=late[["ts", "arrived"]].max(axis=1))
        usable = usable.sort_values(["__available", "ts"]).drop_duplicates(
            ["customer_id", "__available"], keep="last"
        )
        left = labels.head(n).assign(__row=np.arange(n)).sort_values("timestamp")
        ref = pd.merge_asof(
            left, usable, left_on="timestamp", right_on="__available", by="customer_id"
        ).sort_values("__row")
        np.testing.assert_array_equal(got["n"].to_numpy(float), ref["n"].to_numpy(float))
        plain = reference(labels.head(n), store.read("activity"), ["score"])
        np.testing.assert_array_equal(got["score"].to_numpy(float), plain["score"].to_numpy(float))


def test_out_of_core_path_parquet_in_and_out(store, tmp_path):
    rows = random_rows(5_000, 50, 30, seed=8)
    labels = random_labels(1_000, 50, 30, seed=9)
    store.write(VIEW, rows)
    labels.to_parquet(tmp_path / "labels.parquet", index=False)
    out = store.get_training_frame(
        tmp_path / "labels.parquet", ["activity"], out=tmp_path / "out" / "train.parquet"
    )
    in_memory = store.get_training_frame(labels, ["activity"])
    pd.testing.assert_frame_equal(pd.read_parquet(out), in_memory, check_dtype=False)
    assert [p.name for p in out.parent.iterdir()] == ["train.parquet"]
    with pytest.raises(ContractError, match="lack the columns"):
        store.get_training_frame(
            tmp_path / "labels.parquet", ["activity"], timestamp="at", out=tmp_path / "x.parquet"
        )
    assert not (tmp_path / "x.parquet").exists()
    with pytest.raises(NotFound, match="labels file"):
        store.get_training_frame(tmp_path / "nope.parquet", ["activity"])


def test_refused_writes_leave_nothing(store):
    rows = random_rows(100, 10, 10, seed=10)
    first = store.write(VIEW, rows)
    cases = [
        (pd.concat([rows.head(2), rows.head(1)]), "share an (customer_id, ts) key"),
        (
            rows.assign(score=rows["score"].astype("float32")),
            "change column types: 'score' was double, now float",
        ),
        (rows.drop(columns="score"), "lack the columns ['score']"),
        (rows.assign(ts=rows["ts"].where(rows.index != 3)), "'ts' is missing in 1 rows"),
        (rows.assign(ts=rows["ts"].astype(str)), "column 'ts' must hold timestamps"),
        (rows.head(0), "there are no rows"),
    ]
    for frame, message in cases:
        with pytest.raises(
            ContractError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
        ):
            store.write("activity", frame)
    assert store.parts("activity") == [first]
    assert sorted(p.name for p in first.parent.iterdir()) == [first.name, "view.json"]  # no temporary files


def test_view_definitions_persist_and_cannot_change_columns(store, tmp_path):
    store.write(VIEW, random_rows(10, 3, 3, seed=11))
    again = FeatureStore(tmp_path / "store")
    assert again.views == {"activity": VIEW}
    assert json.loads((tmp_path / "store" / "activity" / "view.json").read_text())["entity"] == "customer_id"
    again.register(
        FeatureView("activity", "customer_id", "ts", ["seen_at", "score"], ttl="3D")
    )  # ttl may change
    assert store.view("activity").ttl == pd.Timedelta("3D")
    with pytest.raises(ConfigError, match="already stores the columns"):
        store.register(FeatureView("activity", "customer_id", "ts", ["score"]))
    with pytest.raises(NotFound, match="No feature view named 'nope' in .*Views there: activity"):
        store.view("nope")
    with pytest.raises(NotFound, match="has no rows yet"):
        store.register(FeatureView("empty", "customer_id", "ts", ["x"]))
        store.get_training_frame(random_labels(5, 3, 3, seed=0), ["empty"])


def test_bad_requests(store):
    store.write(VIEW, random_rows(100, 10, 10, seed=12))
    store.write(
        FeatureView("other", "customer_id", "ts", ["score"]),
        random_rows(100, 10, 10, seed=13)[["customer_id", "ts", "score"]],
    )
    labels = random_labels(10, 10, 10, seed=14)
    with pytest.raises(NotFound, match="No feature 'activity:nope' in the store"):
        store.get_training_frame(labels, ["activity:nope"])
    with pytest.raises(ConfigError, match="is in several views; say which: activity:score, other:score"):
        store.get_training_frame(labels, ["score"])
    with pytest.raises(ConfigError, match="come from more than one view"):
        store.get_training_frame(labels, ["activity:score", "other:score"])
    with pytest.raises(ContractError, match=r"The labels lack the columns \['timestamp'\]"):
        store.get_training_frame(labels.drop(columns="timestamp"), ["activity"])
    with pytest.raises(ContractError, match="need the same types as in the views"):
        store.get_training_frame(
            labels.assign(customer_id=labels.customer_id.astype(str) + "x"), ["activity"]
        )
    with pytest.raises(ConfigError, match="names no feature"):
        store.get_training_frame(labels, [])
    with pytest.raises(ConfigError, match="refuses the feature store's settings"):
        FeatureStore(store.path, memory_limit="lots").get_training_frame(labels, ["activity"])


def test_larger_than_memory_join_spills_to_disk(tmp_path):
    "4M feature rows (160 MB in memory) joined under a 75 MiB DuckDB memory limit."
    n_entities, weeks = 40_000, 100
    rng = np.random.default_rng(0)
    entity = np.repeat(np.arange(n_entities), weeks)
    ts = T0 + pd.to_timedelta(
        np.tile(np.arange(weeks), n_entities) * 7 * 86400 + rng.integers(0, 7 * 86400, len(entity)), unit="s"
    )
    rows = pd.DataFrame(
        {
            "customer_id": entity,
            "ts": ts,
            "a": rng.normal(size=len(entity)),
            "b": rng.normal(size=len(entity)),
            "c": rng.integers(0, 9, len(entity)),
        }
    )
    size = rows.memory_usage(deep=True).sum()
    assert 75 * 2**20 < size / 2
    view = FeatureView("big", "customer_id", "ts", ["a", "b", "c"], ttl="30D")
    FeatureStore(tmp_path / "store").write(view, rows)
    labels = pd.DataFrame(
        {
            "customer_id": rng.integers(0, n_entities, 200_000),
            "timestamp": T0 + pd.to_timedelta(rng.integers(0, weeks * 7 * 86400, 200_000), unit="s"),
        }
    )
    no_spill = FeatureStore(tmp_path / "store", memory_limit="75MiB", temp_directory="", threads=2)
    with pytest.raises(ConfigError, match="ran out of memory"):  # proof the join does not fit in the limit
        no_spill.get_training_frame(labels, ["big"])
    spill = FeatureStore(
        tmp_path / "store", memory_limit="75MiB", temp_directory=tmp_path / "spill", threads=2
    )
    got = spill.get_training_frame(labels, ["big"])
    ref = reference(labels, rows, ["a", "b", "c"], ttl="30D")
    np.testing.assert_array_equal(got["a"].to_numpy(float), ref["a"].to_numpy(float))
    np.testing.assert_array_equal(got["c"].to_numpy(float, na_value=np.nan), ref["c"].to_numpy(float))
