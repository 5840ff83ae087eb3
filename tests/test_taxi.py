"""Taxi trips (workers/taxi.py, pipelines/taxi-*.yaml): schema normalisation of every TLC era,
exact distributed medians, the stats and ETL pipelines, the sample generator and the notebook;
and, marked slow, the five results on S3 by shardmap (threads and Dask) against PySpark."""

from __future__ import annotations

import hashlib
import json
import random
import statistics
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import nbformat
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from runner import RunFailed, load_results
from runner.cli import main
from tests.notebooks import execute_notebook
from workers import taxi
from workers.taxi import (
    ETL_SCHEMA,
    SCHEMA,
    SchemaMismatch,
    Settings,
    combine,
    compute_stats,
    describe_drift,
    exact_medians,
    finish,
    normalise,
    pack,
    partials,
    run_etl,
    to_results,
    unpack,
)
from workers.taxi_results import COLUMNS, differences
from workers.taxi_sample import DIRTY, era_schema, taxi_sample

ROOT = Path(__file__).parent.parent
NOTEBOOK = ROOT / "notebooks" / "taxi.ipynb"
PLOTS = ("plot-daily", "plot-zones", "plot-tips", "plot-durations")
MONTHS = ["2022-03", "2023-06", "2025-02"]
# Planted rows the duration filter (0 s < duration < 24 h) must drop; the rest it keeps.
DROPPED_DURATIONS = ("dropoff_before_pickup", "over_24h", "exactly_24h", "zero_duration")
HOUR_US = 3_600_000_000
# What normalise() changes for the 2023+ integer columns, in schema order.
WIDENED = ["VendorID int32 -> int64", "passenger_count int64 -> double",
           "RatecodeID int64 -> double", "PULocationID int32 -> int64",
           "DOLocationID int32 -> int64"]  # fmt: skip


def _trips(**columns: list[Any]) -> pa.Table:
    """A normalised table with the given columns and nulls in every other one."""
    rows = len(next(iter(columns.values())))
    return pa.table(
        [pa.array(columns[f.name], f.type) if f.name in columns else pa.nulls(rows, f.type)
         for f in SCHEMA],
        schema=SCHEMA,
    )  # fmt: skip


def _durations(rows: list[tuple[int | None, int, int]]) -> pa.Table:
    """Trips of (VendorID, pickup hour, duration in microseconds) on 2024-01-01."""
    pickups = [datetime(2024, 1, 1, hour) for _, hour, _ in rows]
    dropoffs = [p + timedelta(microseconds=d) for p, (*_, d) in zip(pickups, rows, strict=True)]
    return _trips(
        VendorID=[vendor for vendor, _, _ in rows],
        tpep_pickup_datetime=pickups,
        tpep_dropoff_datetime=dropoffs,
    )


# -- schema normalisation ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def eras(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One small file per schema era, as the sample generator writes them."""
    folder = tmp_path_factory.mktemp("eras")
    summary = taxi_sample(str(folder), count=3000, months=MONTHS)
    return {f["era"]: folder / f["key"] for f in summary["files"]}


@pytest.mark.parametrize(
    ("era", "raw_types", "drift"),
    [
        ("2022", {"VendorID": pa.int64(), "airport_fee": pa.float64()},
         ["cbd_congestion_fee added (null)"]),
        ("2023", {"VendorID": pa.int32(), "PULocationID": pa.int32(),
                  "passenger_count": pa.int64(), "Airport_fee": pa.float64()},
         [*WIDENED, "Airport_fee -> airport_fee", "cbd_congestion_fee added (null)"]),
        ("2025", {"VendorID": pa.int32(), "store_and_fwd_flag": pa.large_string(),
                  "cbd_congestion_fee": pa.float64()},
         [*WIDENED[:3], "store_and_fwd_flag large_string -> string", *WIDENED[3:],
          "Airport_fee -> airport_fee"]),
    ],
)  # fmt: skip
def test_every_era_normalises_to_the_one_schema(
    eras: dict[str, Path], era: str, raw_types: dict[str, pa.DataType], drift: list[str]
) -> None:
    raw = pq.read_table(eras[era])
    assert {name: raw.schema.field(name).type for name in raw_types} == raw_types
    assert describe_drift(raw.schema) == drift
    table = normalise(raw)
    assert table.schema == SCHEMA
    assert table.num_rows == raw.num_rows
    fee = "airport_fee" if era == "2022" else "Airport_fee"
    assert table["airport_fee"].to_pylist() == raw[fee].to_pylist()
    assert table["VendorID"].to_pylist() == raw["VendorID"].to_pylist()
    assert (
        table["passenger_count"].to_pylist()
        == raw["passenger_count"].cast(pa.float64()).to_pylist()
    )
    cbd = table["cbd_congestion_fee"]
    assert cbd.null_count == (0 if era == "2025" else table.num_rows)


def test_normalise_accepts_other_units_zones_and_all_null_columns() -> None:
    table = normalise(_example_raw())
    assert table.schema == SCHEMA
    # A UTC-aware time keeps its UTC wall time; nanoseconds become microseconds.
    assert table["tpep_pickup_datetime"].to_pylist() == [datetime(2022, 3, 1, 8)]
    assert table["tpep_dropoff_datetime"].to_pylist() == [datetime(2022, 3, 1, 8, 15)]
    assert table["RatecodeID"].to_pylist() == [None]
    assert table["store_and_fwd_flag"].to_pylist() == ["N"]


def _example_raw() -> pa.Table:
    data = normalise(taxi._example()).slice(0, 1)
    columns = {name: data[name] for name in data.column_names if name != "cbd_congestion_fee"}
    columns["tpep_pickup_datetime"] = data["tpep_pickup_datetime"].cast(pa.timestamp("us", "UTC"))
    columns["tpep_dropoff_datetime"] = data["tpep_dropoff_datetime"].cast(pa.timestamp("ns"))
    columns["RatecodeID"] = pa.nulls(1)  # a column written as all-null: Arrow's null type
    columns["store_and_fwd_flag"] = data["store_and_fwd_flag"].dictionary_encode()
    return pa.table(columns)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.drop_columns(["fare_amount", "VendorID"]),
         "s3://b/x.parquet: missing required column(s) VendorID, fare_amount"),
        (lambda t: t.append_column("surprise", pa.array([1])), "unknown column(s) surprise"),
        (lambda t: t.append_column("Airport_fee", pa.array([1.0])),
         "column(s) given twice: airport_fee and Airport_fee"),
        (lambda t: t.set_column(0, "VendorID", pa.array(["1"])),
         "column 'VendorID' is string, not int64"),
        (lambda t: t.set_column(0, "VendorID", pa.array([1.5])),
         "column 'VendorID' (double) does not fit int64"),
    ],
    ids=["missing", "unknown", "twice", "wrong-type", "fractional-id"],
)  # fmt: skip
def test_a_file_that_does_not_fit_is_a_clear_error(change: Any, message: str) -> None:
    with pytest.raises(SchemaMismatch) as caught:
        normalise(change(_example_raw()), source="s3://b/x.parquet")
    assert str(caught.value).startswith("s3://b/x.parquet: ")
    assert message.split(": ", 1)[-1] in str(caught.value)


# -- exact medians and partials ---------------------------------------------------------------


def test_the_median_is_exact_for_odd_and_even_counts() -> None:
    second = 1_000_000
    rows = [(1, 8, d * second) for d in (5, 1, 4, 2, 3)]  # odd: the middle value
    rows += [(2, 8, d * second) for d in (10, 1, 3, 2)]  # even: the mean of 2 and 3
    rows += [(2, 9, 7), (2, 9, 8)]  # microseconds: (7 + 8) / 2 us
    rows += [(None, 8, 4 * second)] * 3  # a null vendor is a group, sorted first
    found = exact_medians(partials(_durations(rows))["durations"]).to_pylist()
    assert found == [
        {"VendorID": None, "pickup_hour": 8, "trips": 3, "duration_avg_s": 4.0,
         "duration_median_s": 4.0},
        {"VendorID": 1, "pickup_hour": 8, "trips": 5, "duration_avg_s": 3.0,
         "duration_median_s": 3.0},
        {"VendorID": 2, "pickup_hour": 8, "trips": 4, "duration_avg_s": 4.0,
         "duration_median_s": 2.5},
        {"VendorID": 2, "pickup_hour": 9, "trips": 2, "duration_avg_s": 7.5e-6,
         "duration_median_s": 7.5e-6},
    ]  # fmt: skip


def test_only_durations_strictly_between_zero_and_a_day_count() -> None:
    day = 24 * HOUR_US
    rows = [(1, 3, d) for d in (-5, 0, 1, day - 1, day, day + 1)]
    (found,) = exact_medians(partials(_durations(rows))["durations"]).to_pylist()
    assert found["trips"] == 2
    assert found["duration_median_s"] == (1 + day - 1) / 2e6


def test_medians_combine_exactly_across_any_split_of_the_rows() -> None:
    rng = random.Random(11)
    rows = [
        (rng.choice([1, 2, 7, None]), rng.randrange(24), rng.choice([1, 60, 61, 3600]) * 1_000_000
         + rng.choice([0, 0, 0, rng.randrange(1_000_000)]))
        for _ in range(3000)
    ]  # fmt: skip
    expected = {}
    for key in {(vendor, hour) for vendor, hour, _ in rows}:
        values = [d for v, h, d in rows if (v, h) == key]
        expected[key] = (
            len(values),
            statistics.median(values) / 1e6,
            sum(values) / len(values) / 1e6,
        )
    cuts = sorted(rng.sample(range(1, len(rows)), 6))
    pieces = [rows[a:b] for a, b in zip([0, *cuts], [*cuts, len(rows)], strict=True)]
    combined = combine(partials(_durations(piece)) for piece in pieces)
    assert combined["durations"].equals(partials(_durations(rows))["durations"])
    found = {
        (r["VendorID"], r["pickup_hour"]): (r["trips"], r["duration_median_s"], r["duration_avg_s"])
        for r in exact_medians(combined["durations"]).to_pylist()
    }
    assert found.keys() == expected.keys()
    for key, (trips, median, mean) in expected.items():
        assert found[key][:2] == (trips, median), key
        assert found[key][2] == pytest.approx(mean, rel=1e-12)


def test_a_histogram_repeating_keys_and_values_merges_before_the_median() -> None:
    histogram = pa.table({"VendorID": [2, None, 2, 2], "pickup_hour": [5, 5, 5, 5],
                          "duration_us": [9, 4, 1, 9], "trips": [1, 2, 1, 1]})  # fmt: skip
    found = exact_medians(histogram).to_pylist()
    assert [(r["VendorID"], r["trips"], r["duration_median_s"]) for r in found] == [
        (None, 2, 4e-6),
        (2, 3, 9e-6),
    ]
    assert exact_medians(histogram.slice(0, 0)).column_names == COLUMNS["durations"]


def test_partials_of_the_parts_finish_like_partials_of_the_whole(eras: dict[str, Path]) -> None:
    whole = pa.concat_tables([normalise(pq.read_table(path)) for path in eras.values()])
    pieces = [whole.slice(start, 700) for start in range(0, whole.num_rows, 700)]
    one_pass = to_results(*finish(partials(whole)))
    parts = [unpack(_parquet_round_trip(pack(partials(piece)))) for piece in pieces]
    combined = to_results(*finish(combine(parts)))
    # Keys and counts exact; float sums and averages up to their summation order.
    assert differences(combined, one_pass, rel=1e-12) == []
    assert len(one_pass.daily) > 30 and len(one_pass.durations) > 50  # enough to differ in


def _parquet_round_trip(table: pa.Table) -> pa.Table:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return pq.read_table(pa.BufferReader(sink.getvalue()))


def test_top_zones_break_ties_by_the_smaller_id_with_null_first() -> None:
    zones = [None, 5, 3, 9, *range(10, 20)]
    distance = [4.0, 4.0, 4.0, 9.0, *([1.0] * 10)]
    trips = _trips(PULocationID=zones, trip_distance=distance)
    top = finish(partials(trips))[0]["top_zones"]["PULocationID"].to_pylist()
    assert top == [9, None, 3, 5, 10, 11, 12, 13, 14, 15]


def test_settings_refuse_typos_and_bad_parts() -> None:
    with pytest.raises(ValueError, match="Destination"):
        Settings.from_batch_input({"Destination": "out"})
    with pytest.raises(ValueError, match="Parts"):
        Settings.from_batch_input({"Dest": "out", "Parts": [1, 2]})
    with pytest.raises(ValueError, match="Dest"):
        Settings.from_batch_input({})
    assert Settings.from_batch_input({"Dest": "S3://b/x/"}).root == "s3://b/x/taxi"


# -- the stats pipeline, locally --------------------------------------------------------------


@pytest.fixture(scope="module")
def local_sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("taxi") / "data"
    return folder, taxi_sample(str(folder), count=24_000, months=MONTHS)


@pytest.fixture(scope="module")
def local_stats(
    local_sample: tuple[Path, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Any, Path]:
    folder, _ = local_sample
    dest = tmp_path_factory.mktemp("results")
    state = tmp_path_factory.mktemp("state")
    return compute_stats(str(folder), str(dest), state_dir=str(state)), dest


def test_the_stats_match_what_the_sample_planted(
    local_sample: tuple[Path, dict[str, Any]], local_stats: tuple[Any, Path]
) -> None:
    _, summary = local_sample
    results, _ = local_stats
    dirty = summary["dirty"]
    assert min(dirty.values()) > 0  # every kind of dirt occurs, so none is checked against 0
    assert results.identity["rows"] == summary["rows"] == 24_000
    assert results.identity["nulls"] == summary["nulls"]
    assert results.daily["trips"].sum() == summary["rows"]
    assert results.payment_mix["trips"].sum() == summary["rows"]
    kept = summary["rows"] - sum(dirty[kind] for kind in DROPPED_DURATIONS)
    assert results.durations["trips"].sum() == kept
    # Null keys are groups of their own, sorted first.
    assert results.payment_mix["trips"].iloc[0] == dirty["null_payment_type"]
    assert results.payment_mix["payment_type"].isna().iloc[0]
    assert results.durations["VendorID"].isna().iloc[0]
    assert (
        results.durations.loc[results.durations["VendorID"].isna(), "trips"].sum()
        <= dirty["null_vendor"]
    )
    assert {6, 7} <= set(results.durations["VendorID"].dropna())  # 2025's vendors
    # Pickups outside the sample's months are days of their own (the 2002 ones included).
    months = {f"{d.year}-{d.month:02d}" for d in results.daily["pickup_date"]}
    assert set(MONTHS) <= months and "2002-12" in months
    assert list(results.top_zones["PULocationID"][:2]) == [132, 237]  # JFK: long trips


def test_the_contract_dtypes_and_order_hold(local_stats: tuple[Any, Path]) -> None:
    results, dest = local_stats
    for name, columns in COLUMNS.items():
        frame = getattr(results, name)
        assert list(frame.columns) == columns
        for column in columns:
            expected = "float64" if column.endswith(("_sum", "_avg", "_s")) else "Int64"
            if column == "pickup_date":
                expected = "object"  # datetime.date values
            assert str(frame[column].dtype) == expected, (name, column)
    assert list(results.daily["pickup_date"]) == sorted(results.daily["pickup_date"])
    sums = list(results.top_zones["trip_distance_sum"])
    assert len(sums) == 10 and sums == sorted(sums, reverse=True)
    marker = json.loads((dest / "taxi" / "stats" / "_stats.json").read_text())
    assert marker["rows"] == 24_000 and len(marker["inputs"]) == 3


def test_processes_and_a_rerun_give_the_same_results(
    local_sample: tuple[Path, dict[str, Any]], local_stats: tuple[Any, Path]
) -> None:
    folder, _ = local_sample
    results, dest = local_stats
    partials_before = sorted(p.name for p in (dest / "taxi" / "partials").iterdir())
    again = compute_stats(str(folder), str(dest), executor="processes")
    assert differences(results, again, rel=1e-12) == []
    # Partials are named by the file's ETag: the rerun overwrote them, it added none.
    assert sorted(p.name for p in (dest / "taxi" / "partials").iterdir()) == partials_before
    assert len(partials_before) == 3


def test_a_file_with_a_missing_column_fails_its_batch_naming_the_file(
    local_sample: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    folder, summary = local_sample
    source = tmp_path / "data"
    source.mkdir()
    good = summary["files"][0]["key"]
    (source / good).write_bytes((folder / good).read_bytes())
    bad = pq.read_table(folder / summary["files"][1]["key"]).drop_columns(["fare_amount"])
    pq.write_table(bad, source / "yellow_tripdata_2023-07.parquet")
    with pytest.raises(RunFailed) as caught:
        compute_stats(str(source), str(tmp_path / "out"))
    frame = load_results(caught.value.result.manifest_url)
    failed = frame[frame["status"] == "FAILED"]
    # The good file succeeded, or was aborted when the bad one failed the run (fail-fast).
    assert len(failed) == 1 and set(frame["status"]) <= {"FAILED", "SUCCEEDED", "ABORTED"}
    assert failed["error"].iloc[0] == "Taxi.BadSchema"
    cause = failed["cause"].iloc[0]
    assert (
        f"{source}/yellow_tripdata_2023-07.parquet: missing required column(s) fare_amount" in cause
    )
    assert not (tmp_path / "out" / "taxi" / "stats").exists()  # no reduce over partial data


# -- the ETL job ------------------------------------------------------------------------------


def _parts(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("part-"))


def test_the_etl_writes_exactly_n_files_holding_every_row(
    local_sample: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    folder, summary = local_sample
    output = run_etl(str(folder), str(tmp_path / "out"), files=3)
    etl = tmp_path / "out" / "taxi" / "etl"
    assert output["rows"] == summary["rows"] and output["files"] == 3
    assert _parts(etl) == [f"part-0000{j}-of-00003.parquet" for j in range(3)]
    written = pa.concat_tables(pq.read_table(etl / name) for name in _parts(etl))
    assert written.schema == ETL_SCHEMA
    # The rows in listing order, normalised, each once; one processing time for the run.
    source = pa.concat_tables(normalise(pq.read_table(folder / f["key"])) for f in summary["files"])
    assert written.drop_columns(["current_date"]).equals(source)
    stamps = pc.unique(written["current_date"]).to_pylist()
    assert len(stamps) == 1 and stamps[0].tzinfo is not None
    assert [pq.ParquetFile(etl / n).metadata.num_rows for n in _parts(etl)] == [8000] * 3
    manifest = json.loads((etl / "_manifest.json").read_text())
    assert manifest["rows"] == summary["rows"] and len(manifest["parts"]) == 3


def test_an_etl_rerun_overwrites_and_another_n_replaces_the_parts(
    local_sample: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    folder, _ = local_sample
    etl = tmp_path / "out" / "taxi" / "etl"
    run_etl(str(folder), str(tmp_path / "out"), files=3)
    (etl / "keep-me.txt").write_text("not a part")
    again = run_etl(str(folder), str(tmp_path / "out"), files=3)
    assert again["removed"] == [] and len(_parts(etl)) == 3
    fewer = run_etl(str(folder), str(tmp_path / "out"), files=2)
    assert _parts(etl) == ["part-00000-of-00002.parquet", "part-00001-of-00002.parquet"]
    assert len(fewer["removed"]) == 3 and (etl / "keep-me.txt").exists()
    assert sum(pq.ParquetFile(etl / n).metadata.num_rows for n in _parts(etl)) == 24_000


def test_the_etl_pipeline_from_the_cli_writes_more_parts_than_rows(tmp_path: Path) -> None:
    data = tmp_path / "data"
    taxi_sample(str(data), count=3, months=["2023-06"])
    done = CliRunner().invoke(
        main,
        ["run", str(ROOT / "pipelines" / "taxi-etl.yaml"), "--source", str(data),
         "--dest", str(tmp_path / "out"), "--input", '{"Parts": [0, 1, 2, 3, 4]}'],
        catch_exceptions=False,
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert '"rows": 3, "files": 5' in done.output
    etl = tmp_path / "out" / "taxi" / "etl"
    rows = [pq.ParquetFile(etl / name).metadata.num_rows for name in _parts(etl)]
    assert rows == [0, 1, 0, 1, 1]  # part j: rows j*3//5 to (j+1)*3//5; empty parts exist too
    assert all(pq.read_schema(etl / name) == ETL_SCHEMA for name in _parts(etl))


def test_the_etl_fails_on_a_file_that_does_not_fit(tmp_path: Path) -> None:
    data = tmp_path / "data"
    taxi_sample(str(data), count=10, months=["2023-06"])
    pq.write_table(pa.table({"VendorID": [1]}), data / "broken.parquet")
    with pytest.raises(RunFailed) as caught:
        run_etl(str(data), str(tmp_path / "out"), files=2)
    assert caught.value.error == "States.ExceedToleratedFailureThreshold"
    assert (
        f"Taxi.BadSchema: {data}/broken.parquet: missing required column(s)" in caught.value.cause
    )


# -- the sample generator ---------------------------------------------------------------------


def test_the_sample_cli_writes_each_era_with_planted_dirt(tmp_path: Path) -> None:
    done = CliRunner().invoke(
        main,
        ["sample", "taxi", str(tmp_path / "a"), "--rows", "30000", "--months",
         "2022-01,2023-06,2025-02"],
        catch_exceptions=False,
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    summary = json.loads(done.output.split("\n", 1)[1])
    assert summary["objects"] == 3 and summary["rows"] == 30000
    assert [f["key"] for f in summary["files"]] == [
        f"yellow_tripdata_{month}.parquet" for month in ("2022-01", "2023-06", "2025-02")
    ]
    for entry in summary["files"]:
        path = tmp_path / "a" / entry["key"]
        assert pq.read_schema(path).remove_metadata() == era_schema(int(entry["key"][16:20]))
        assert pq.ParquetFile(path).metadata.num_rows == entry["rows"] == 10000
    assert set(summary["dirty"]) == set(DIRTY) and min(summary["dirty"].values()) > 0
    # About 11% null pattern rows (3,300 expected; 4 standard deviations either side).
    assert 3080 < summary["null_pattern"] < 3520
    assert summary["nulls"]["passenger_count"] == summary["null_pattern"]
    times = pq.read_table(tmp_path / "a" / summary["files"][0]["key"])["tpep_pickup_datetime"]
    assert times.type == pa.timestamp("us")  # no time zone, as TLC writes them
    fraction = pc.cast(times, pa.int64()).to_numpy() % 1_000_000
    assert 0 < (fraction != 0).mean() < 0.05  # whole seconds, but for a few microsecond times


def test_the_sample_is_deterministic_and_splits_big_months(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("workers.taxi_sample.FILE_ROWS", 4000)
    monkeypatch.setattr("workers.taxi_sample.ROW_GROUP_ROWS", 1500)
    one = taxi_sample(str(tmp_path / "a"), count=9000, seed=3, months=["2024-02"])
    assert one == taxi_sample(str(tmp_path / "b"), count=9000, seed=3, months=["2024-02"])
    assert [(f["key"], f["rows"], f["row_groups"]) for f in one["files"]] == [
        ("yellow_tripdata_2024-02-00.parquet", 3000, 2),
        ("yellow_tripdata_2024-02-01.parquet", 3000, 2),
        ("yellow_tripdata_2024-02-02.parquet", 3000, 2),
    ]
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    taxi_sample(str(tmp_path / "c"), count=9000, seed=4, months=["2024-02"])
    assert _digests(tmp_path / "a") != _digests(tmp_path / "c")


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_the_sample_refuses_bad_months(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2023-13"):
        taxi_sample(str(tmp_path), count=10, months=["2023-13"])


# -- the notebook -----------------------------------------------------------------------------


def test_the_committed_notebook_has_no_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, cell.source[:60]


def test_the_notebook_plots_the_stats(
    local_stats: tuple[Any, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results, dest = local_stats
    monkeypatch.setenv("SHARDMAP_TAXI_STATS", str(dest / "taxi" / "stats"))
    ran = execute_notebook(NOTEBOOK, tmp_path)
    notebook, outputs, stdout = ran.notebook, ran.outputs, ran.stdout
    assert f"24,000 trips from 3 files, {len(results.daily)} pickup days" in stdout
    assert "the identity checks match the daily, payment and duration tables" in stdout
    assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    for tag in PLOTS:
        (cell,) = [c for c in notebook.cells if tag in c.metadata.get("tags", [])]
        images = [o for o in cell.outputs if "image/png" in o.get("data", {})]
        assert len(images) == 1, f"{tag} drew no image: {cell.outputs}"


# -- against PySpark, on S3, local and Dask ---------------------------------------------------


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    from tests.taxi_reference import spark_session

    session = spark_session()
    try:
        yield session
    finally:
        session.stop()


@pytest.fixture(scope="module")
def dask_cluster() -> Iterator[str]:
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
        as local,
        Client(local),
    ):  # fmt: skip
        yield local.scheduler_address


@pytest.mark.slow
def test_shardmap_on_local_and_dask_matches_pyspark_on_s3(
    s3_server: Any, s3_client: Any, bucket: str, spark: Any, dask_cluster: str,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from tests.taxi_reference import spark_results

    source = f"s3://{bucket}/trips/"
    summary = taxi_sample(source, count=200_000, months=MONTHS)
    assert summary["objects"] == 3 and min(summary["dirty"].values()) > 0
    paths = [f"{source}{f['key']}" for f in summary["files"]]
    expected = spark_results(paths, spark)
    assert expected.identity["rows"] == 200_000

    local = compute_stats(source, f"s3://{bucket}/local", executor="threads")
    assert differences(expected, local, rel=1e-9) == []
    monkeypatch.setenv("SHARDMAP_DASK_SCHEDULER", dask_cluster)
    remote = compute_stats(source, f"s3://{bucket}/dask", executor="dask")
    assert differences(expected, remote, rel=1e-9) == []
    assert remote.identity["nulls"] == summary["nulls"]

    etl = run_etl(source, f"s3://{bucket}/dask", files=4, executor="dask")
    assert etl["rows"] == 200_000 and etl["files"] == 4
    keys = s3_client.list_objects_v2(Bucket=bucket, Prefix="dask/taxi/etl/")["Contents"]
    assert sorted(o["Key"].rsplit("/", 1)[1] for o in keys) == [
        "_manifest.json",
        *(f"part-0000{j}-of-00004.parquet" for j in range(4)),
    ]
