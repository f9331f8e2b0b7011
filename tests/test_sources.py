"""Sources on real files and a real PostgreSQL server: every kind read whole and in chunks, and every bad input
(unknown table, bad URL, malformed CSV, empty result, missing file) failing with a clear error and nothing written."""

import sqlite3

import duckdb
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from mlkit.core import ConfigError, ContractError, NotFound, free_port
from mlkit.data.contracts import Feature, tabular_schema
from mlkit.data.ingest import ingest
from mlkit.data.sources import SOURCES, iter_source, open_source, read_source

N = 2_500


@pytest.fixture(scope="module")
def people() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "id": np.arange(N),
            "plan": rng.choice(["basic", "pro", "team"], N),
            "fee": rng.choice([9.99, 29.99, 99.0], N),
            "visits": rng.integers(0, 50, N),
        }
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory, people):
    "The same rows as a SQLite file, a DuckDB file, a CSV file and a Parquet file."
    d = tmp_path_factory.mktemp("sources")
    with sqlite3.connect(d / "crm.db") as con:
        people.to_sql("customers", con, index=False)
        people.head(0).to_sql("empty_table", con, index=False)
    with duckdb.connect(str(d / "crm.duckdb")) as con:
        con.register("people", people)
        con.execute("CREATE TABLE customers AS SELECT * FROM people")
        con.execute("CREATE SCHEMA sales")
        con.execute("CREATE TABLE sales.orders AS SELECT id, fee FROM people")
    people.to_csv(d / "customers.csv", index=False)
    people.to_parquet(d / "customers.parquet", index=False)
    return d


def locations(d, people):
    return {
        "sql": (f"sqlite:///{d}/crm.db", {"table": "customers"}),
        "duckdb": (f"duckdb:///{d}/crm.duckdb", {"table": "customers"}),
        "csv": (d / "customers.csv", {}),
        "parquet": (d / "customers.parquet", {}),
        "frame": (people, {}),
    }


def test_registry_has_every_kind():
    assert set(SOURCES) >= {"sql", "duckdb", "csv", "parquet", "frame"}


@pytest.mark.parametrize("kind", ["sql", "duckdb", "csv", "parquet", "frame"])
def test_every_kind_reads_whole_and_in_chunks(files, people, kind):
    location, options = locations(files, people)[kind]
    assert open_source(location, **options).kind == kind
    pd.testing.assert_frame_equal(read_source(location, **options), people, check_dtype=False)
    chunks = list(iter_source(location, chunksize=1000, **options))
    assert [len(c) for c in chunks] == [1000, 1000, 500]
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), people, check_dtype=False)


def test_frame_source_returns_a_copy(people):
    got = read_source(people)
    got.loc[0, "fee"] = -1.0
    assert people.loc[0, "fee"] != -1.0


def test_queries_with_bound_parameters(files, people):
    expected = int((people.fee > 50).sum())
    q = "SELECT count(*) AS n FROM customers WHERE fee > :fee"
    assert read_source(f"sqlite:///{files}/crm.db", query=q, params={"fee": 50})["n"].item() == expected
    q = "SELECT count(*) AS n FROM customers WHERE fee > $fee"
    assert read_source(files / "crm.duckdb", query=q, params={"fee": 50})["n"].item() == expected
    assert read_source(files / "crm.duckdb", table="sales.orders").shape == (N, 2)


def test_sql_reads_do_not_create_or_change_files(files):
    before = {p.name: p.stat().st_mtime_ns for p in files.iterdir()}
    read_source(f"sqlite:///{files}/crm.db", table="customers")
    read_source(f"duckdb:///{files}/crm.duckdb", table="customers")
    with pytest.raises(NotFound):
        read_source(f"sqlite:///{files}/nope.db", table="customers")
    with pytest.raises(NotFound):
        read_source(f"duckdb:///{files}/nope.duckdb", table="customers")
    assert {p.name: p.stat().st_mtime_ns for p in files.iterdir()} == before


@pytest.mark.parametrize(
    "location",
    [lambda d: f"sqlite:///{d}/crm.db", lambda d: f"duckdb:///{d}/crm.duckdb"],
    ids=["sqlite", "duckdb"],
)
def test_unknown_table_lists_the_tables(files, location):
    with pytest.raises(NotFound, match=r"The table 'customer' does not exist in .*Tables there: .*customers"):
        read_source(location(files), table="customer")


def test_missing_files_name_their_neighbours(files):
    with pytest.raises(
        NotFound, match=r"The CSV file '.*customer\.csv' does not exist\. Files in .*customers\.csv"
    ):
        read_source(files / "customer.csv")
    with pytest.raises(NotFound, match=r"does not exist, nor does its folder"):
        read_source(files / "nowhere" / "customers.parquet")
    with pytest.raises(NotFound, match="The SQLite database file"):
        read_source(f"sqlite:///{files}/nope.db", table="customers")
    with pytest.raises(NotFound, match="The DuckDB file"):
        iter_source(files / "nope.duckdb", table="customers")


def test_bad_urls_and_drivers(files):
    with pytest.raises(ConfigError, match="is not a valid SQLAlchemy URL"):
        read_source("sqlite//crm.db", kind="sql", table="customers")
    with pytest.raises(ConfigError, match="SQLAlchemy has no dialect 'nosuchdb'"):
        read_source("nosuchdb://host/db", table="customers")
    with pytest.raises(ConfigError, match="needs exactly one of table= or query="):
        read_source(f"sqlite:///{files}/crm.db")
    with pytest.raises(ConfigError, match="needs exactly one of table= or query="):
        read_source(f"sqlite:///{files}/crm.db", table="customers", query="SELECT 1")
    with pytest.raises(ConfigError, match=r"failed: no such table: nope\. Check the SQL"):
        read_source(f"sqlite:///{files}/crm.db", query="SELECT * FROM nope")
    with pytest.raises(ConfigError, match="Check the SQL"):
        read_source(f"duckdb:///{files}/crm.duckdb", query="SELEC 1")
    with pytest.raises(ConfigError, match="Unknown source kind 'xls'. Registered: csv, duckdb"):
        read_source(files / "customers.csv", kind="xls")
    with pytest.raises(ConfigError, match="Cannot tell what kind of source"):
        read_source(files / "customers.xlsx")


def test_unreachable_server_hides_the_password():
    url = f"postgresql+psycopg://mlkit:s3cret@127.0.0.1:{free_port()}/db"
    with pytest.raises(
        ConfigError, match=r"Cannot connect to postgresql\+psycopg://mlkit:\*\*\*@127\.0\.0\.1"
    ) as err:
        read_source(url, table="customers")
    assert "s3cret" not in str(err.value)


def test_malformed_files(files, tmp_path):
    (tmp_path / "bad.csv").write_text("id,plan\n1,basic\n2,pro,extra\n")
    with pytest.raises(ContractError, match=r"bad\.csv' is malformed: .*Expected 2 fields in line 3, saw 3"):
        read_source(tmp_path / "bad.csv")
    with pytest.raises(ContractError, match="is malformed"):  # in chunks too, where the bad line comes late
        list(iter_source(tmp_path / "bad.csv", chunksize=1))
    (tmp_path / "blank.csv").write_text("")
    with pytest.raises(ContractError, match="is malformed: No columns to parse from file"):
        read_source(tmp_path / "blank.csv")
    (tmp_path / "latin1.csv").write_bytes("id,name\n1,Jos\xe9\n".encode("latin-1"))
    with pytest.raises(ContractError, match="is malformed"):
        read_source(tmp_path / "latin1.csv")
    assert read_source(tmp_path / "latin1.csv", encoding="latin-1")["name"].item() == "José"
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ContractError, match="is not a readable Parquet file"):
        read_source(tmp_path / "bad.parquet")
    (tmp_path / "bad.duckdb").write_text("not a database")
    with pytest.raises(ConfigError, match="Cannot open the DuckDB file"):
        read_source(tmp_path / "bad.duckdb", table="customers")


def test_empty_results_are_errors_unless_allowed(files, tmp_path):
    empty_query = {"query": "SELECT * FROM customers WHERE fee < 0"}
    for location, options in [
        (f"sqlite:///{files}/crm.db", empty_query),
        (f"sqlite:///{files}/crm.db", {"table": "empty_table"}),
        (files / "crm.duckdb", empty_query),
        (pd.DataFrame({"a": []}), {}),
    ]:
        with pytest.raises(ContractError, match="has no rows. Check the source, or pass allow_empty=True"):
            read_source(location, **options)
        with pytest.raises(ContractError, match="has no rows"):
            iter_source(location, chunksize=10, **options)  # at the call, not in the middle of a loop
        assert len(read_source(location, allow_empty=True, **options)) == 0
        assert list(iter_source(location, chunksize=10, allow_empty=True, **options)) == []
    (tmp_path / "header.csv").write_text("id,plan\n")
    with pytest.raises(ContractError, match="The CSV file .* has no rows"):
        read_source(tmp_path / "header.csv")


@pytest.mark.parametrize("chunksize", [0, -5, 2.5, True])
def test_chunksize_must_be_a_positive_int(people, chunksize):
    with pytest.raises(ConfigError, match="chunksize must be a positive int"):
        iter_source(people, chunksize=chunksize)


CONTRACT = tabular_schema(
    {
        "id": Feature("int", unique=True),
        "plan": Feature("str", allowed=["basic", "pro", "team"]),
        "fee": Feature("float", min=0),
        "visits": Feature("int", min=0, max=100),
    },
    name="customers",
)


def test_contract_checked_as_read_every_violation_reported(files, people, tmp_path):
    assert len(read_source(files / "customers.parquet", schema=CONTRACT)) == N
    bad = people.copy()
    bad.loc[3, "plan"] = "gold"
    bad.loc[[5, 6], "id"] = 7
    bad.loc[9, "visits"] = 500
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ContractError, match=r"breaks its contract \(3 violations\)") as err:
        read_source(tmp_path / "bad.csv", schema=CONTRACT)
    msg = str(err.value)
    assert (
        "column 'plan' breaks the rule isin(['basic', 'pro', 'team']) (1 rows, e.g. 'gold' at row 3)" in msg
    )
    assert "column 'id' breaks the rule field_uniqueness" in msg
    assert "column 'visits' breaks the rule in_range(0, 100) (1 rows, e.g. 500 at row 9)" in msg
    assert {(v["column"], v["rows"]) for v in err.value.violations} == {("plan", 1), ("id", 3), ("visits", 1)}


def test_ingest_writes_only_valid_data_atomically(files, people, tmp_path):
    dest = tmp_path / "lake" / "customers.parquet"
    ingest(f"sqlite:///{files}/crm.db", CONTRACT, dest, table="customers")
    pd.testing.assert_frame_equal(pd.read_parquet(dest), people, check_dtype=False)
    before = dest.read_bytes()
    people.assign(fee=-1.0).to_csv(tmp_path / "negative.csv", index=False)
    with pytest.raises(ContractError, match="greater_than_or_equal_to"):
        ingest(tmp_path / "negative.csv", CONTRACT, dest)
    assert dest.read_bytes() == before  # the previous version stays whole
    with pytest.raises(NotFound):
        ingest(tmp_path / "missing.csv", CONTRACT, tmp_path / "lake" / "other.parquet")
    assert sorted(p.name for p in dest.parent.iterdir()) == ["customers.parquet"]


@pytest.mark.postgres
def test_postgres_table_query_and_streamed_chunks(postgres_url, people):
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE IF EXISTS customers"))
            conn.execute(sa.text("DROP SCHEMA IF EXISTS crm CASCADE"))
            conn.execute(sa.text("CREATE SCHEMA crm"))
        people.to_sql("customers", engine, index=False)
        people.head(10).to_sql("vip", engine, index=False, schema="crm")
    finally:
        engine.dispose()
    pd.testing.assert_frame_equal(read_source(postgres_url, table="customers"), people, check_dtype=False)
    assert len(read_source(postgres_url, table="crm.vip")) == 10
    q = "SELECT * FROM customers WHERE fee > :fee ORDER BY id"
    got = read_source(postgres_url, query=q, params={"fee": 50})
    pd.testing.assert_frame_equal(got, people[people.fee > 50].reset_index(drop=True), check_dtype=False)
    chunks = list(iter_source(postgres_url, chunksize=700, query="SELECT * FROM customers ORDER BY id"))
    assert [len(c) for c in chunks] == [700, 700, 700, 400]
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), people, check_dtype=False)
    with pytest.raises(
        NotFound,
        match=r"The table 'customer' does not exist in postgresql\+psycopg://.*Tables there: (\w+, )*customers\b",
    ):
        read_source(postgres_url, table="customer")
    with pytest.raises(ContractError, match="has no rows"):
        read_source(postgres_url, query="SELECT * FROM customers WHERE fee < 0")
    with pytest.raises(ConfigError, match='relation "nope" does not exist'):
        read_source(postgres_url, query="SELECT * FROM nope")


@pytest.mark.parametrize("kind", ["sql", "duckdb", "csv", "parquet"])
def test_chunked_ingest_writes_what_whole_ingest_writes(files, people, tmp_path, kind):
    location, options = locations(files, people)[kind]
    contract = tabular_schema(
        {
            "id": Feature("int", unique=True),
            "plan": Feature("str", allowed=["basic", "pro", "team"]),
            "fee": "float",
        },
        name="customers",
        min_rows=N,
    )
    whole = ingest(location, contract, tmp_path / "whole.parquet", **options)
    chunked = ingest(location, contract, tmp_path / "chunked.parquet", chunksize=600, **options)
    pd.testing.assert_frame_equal(pd.read_parquet(chunked), pd.read_parquet(whole))
    assert pd.read_parquet(chunked)["id"].tolist() == people["id"].tolist()


def test_chunked_ingest_checks_the_whole_table_rules_over_every_chunk(files, people, tmp_path):
    "Rules no single chunk can break: a missing share reached only overall, too few rows, a key repeated across chunks."
    sparse = people.assign(
        fee=people["fee"].where(people.index % 10 != 0)
    )  # 10% missing: 0-20% in each chunk
    sparse.loc[2_000, "id"] = 5  # repeats row 5, three chunks earlier
    sparse.to_csv(tmp_path / "sparse.csv", index=False)
    contract = tabular_schema(
        {"id": Feature("int", unique=True), "plan": "str", "fee": Feature("float", max_missing=0.05)},
        name="customers",
        min_rows=3_000,
    )
    dest = tmp_path / "lake" / "customers.parquet"
    with pytest.raises(ContractError) as err:
        ingest(tmp_path / "sparse.csv", contract, dest, chunksize=600)
    message = str(err.value)
    assert "breaks its contract (3 violations)" in message
    assert "the data set breaks the rule at least 3000 rows" in message
    assert "column 'fee' breaks the rule missing share <= 0.05" in message
    assert "column 'id' breaks the rule field_uniqueness (1 rows, e.g. 5 at row 2000)" in message
    assert not dest.parent.exists() or list(dest.parent.iterdir()) == []  # nothing written, no temp file left
    # the same data checked in one piece breaks the same rules
    with pytest.raises(ContractError, match=r"3 violations"):
        ingest(tmp_path / "sparse.csv", contract, dest)
