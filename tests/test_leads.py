"""Leads curation (workers/leads.py, pipelines/leads.yaml): the rules and normalisers, and the
pipeline on real S3 checked against the ground truth the sample generator planted, including a
real crash between the commit and the archiving."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from runner import MapSpec, RunStatus, WorkerError, run
from tests import leads_crash
from tests.notebooks import execute_notebook
from workers import leads
from workers.leads import (
    LEAD_SCHEMA,
    REASONS,
    REJECT_SCHEMA,
    Settings,
    coerce_bool,
    curate_table,
    deduplicate,
    normalize_countries,
    normalize_emails,
    normalize_names,
    normalize_phones,
)
from workers.leads_sample import BLACKLIST, leads_sample

ROOT = Path(__file__).parent.parent
PIPELINE = ROOT / "pipelines" / "leads.yaml"
NOTEBOOK = ROOT / "notebooks" / "leads.ipynb"
PLOTS = ("plot-funnel", "plot-rejects")
RULE_COUNTS = ("raw", *REASONS)
FUNNEL = ("raw", "valid", "callable", "deduplicated")
E164 = re.compile(r"\+[1-9]\d{6,14}")


# -- normalisers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (pa.array([True, False, None]), [True, False, None]),
        (pa.array([1, 0, None, 2], pa.int64()), [True, False, None, True]),
        (pa.array([1, 0], pa.int8()), [True, False]),
        (pa.array([1.0, 0.0, None]), [True, False, None]),
        (
            pa.array(["true", "False", "TRUE", " yes ", "No", "1", "0", "", "maybe", None]),
            [True, False, True, True, False, True, False, None, None, None],
        ),
        (pa.nulls(2), [None, None]),
        (pa.chunked_array([["true"], ["0"]]), [True, False]),
    ],
    ids=["bool", "int64", "int8", "float", "strings", "all-null", "chunked"],
)
def test_booleans_are_coerced_from_every_export_encoding(values: Any, expected: list) -> None:
    assert coerce_bool(values).to_pylist() == expected


EMAILS = [  # given -> (lower-cased and trimmed, validated: the dedup key)
    (" Ann.Lee@Acme.COM\t", ("ann.lee@acme.com", "ann.lee@acme.com")),
    ("ann..lee@acme.com", ("ann..lee@acme.com", None)),
    ("ann@acme", ("ann@acme", None)),
    ("ann lee@acme.com", ("ann lee@acme.com", None)),
    ("x@acme.test", ("x@acme.test", None)),  # a special-use domain
    ("Ann.Lee@acme.com.", ("ann.lee@acme.com.", None)),
    ("", (None, None)),
    (None, (None, None)),
    # An IDNA domain and its Unicode spelling are one address: one dedup key.
    ("a@xn--bcher-kva.de", ("a@xn--bcher-kva.de", "a@bücher.de")),
    ("A@BÜCHER.de", ("a@bücher.de", "a@bücher.de")),
]


def test_emails_are_trimmed_lower_cased_and_validated_without_dns() -> None:
    cleaned, valid = normalize_emails(pa.array([given for given, _ in EMAILS]))
    assert list(zip(cleaned.to_pylist(), valid.to_pylist(), strict=True)) == [
        expected for _, expected in EMAILS
    ]


PHONES = [  # (phone, country) -> (E.164, E.164 with DefaultCountry US)
    (("(201) 555-0123", "US"), ("+12015550123", "+12015550123")),
    (("07400 123456", "GB"), ("+447400123456", "+447400123456")),
    (("+49 1512 3456789", None), ("+4915123456789", "+4915123456789")),
    (("tel:+33-6-12-34-56-78", None), ("+33612345678", "+33612345678")),
    (("06 12 34 56 78", "FR"), ("+33612345678", "+33612345678")),
    # A national number with no country has no region to be read in; nor is a GB number a US one.
    (("07400 123456", None), (None, None)),
    (("2015550123", None), (None, "+12015550123")),
    (("n/a", "US"), (None, None)),
    (("12345", "US"), (None, None)),
    ((None, "US"), (None, None)),
]


def test_phones_become_e164_with_the_row_country_as_region() -> None:
    phones = pa.array([phone for (phone, _), _ in PHONES], pa.string())
    countries = pa.array([country for (_, country), _ in PHONES], pa.string())
    plain = normalize_phones(phones, countries).to_pylist()
    with_default = normalize_phones(phones, countries, default_country="US").to_pylist()
    assert list(zip(plain, with_default, strict=True)) == [expected for _, expected in PHONES]


COUNTRIES = {
    "United States": "US", "usa": "US", "U.S.A.": "US", "GBR": "GB", "uk": "GB",
    " Great  Britain ": "GB", "deutschland": "DE", "DE": "DE", "de": "DE",
    "The Netherlands": "NL", "España": "ES", "Atlantis": None, "N/A": None, "": None, "XX": None,
}  # fmt: skip


def test_countries_map_names_alpha3_and_alpha2_spellings_to_iso_codes() -> None:
    found = normalize_countries(pa.array([*COUNTRIES, None])).to_pylist()
    assert found == [*COUNTRIES.values(), None]


NAMES = {
    "  JOHN ": "John", "mary": "Mary", "o'brien": "O'Brien", "ANNE-MARIE": "Anne-Marie",
    "McDonald": "McDonald", "van  dijk": "Van Dijk", "ÉMILE": "Émile", "": None,
}  # fmt: skip


def test_names_are_title_cased_only_when_typed_in_one_case() -> None:
    assert normalize_names(pa.array(list(NAMES))).to_pylist() == list(NAMES.values())


# -- rules and settings -----------------------------------------------------------------------

RULE_CASES = [  # (id, email, emailInvalid, unsubscribed, doNotCall) -> the first rule failed
    ((None, "bad", "false", "yes", "1"), "missing_id"),  # also bad email, unsubscribed, DNC
    (("2", "bad@", "true", "0", "0"), "invalid_email"),  # also flagged invalid
    (("3", "a@spam.com", "TRUE", "0", "0"), "email_invalid_flag"),  # also blacklisted
    (("4", "b@eu.spam.com", None, "1", "0"), "blacklisted"),  # a subdomain; also unsubscribed
    (("5", " Boss@Rival.io", "0", "0", "0"), "blacklisted"),  # the listed address itself
    (("6", "c@ok.io", "no", "1", "yes"), "unsubscribed"),  # also do-not-call
    (("7", "d@ok.io", "0", "0", "yes"), "do_not_call"),
    (("8", "e@ok.io", "0", "0", None), None),  # doNotCall null: kept by default
    (("9", "f@ok.io", "0", "0", "False"), None),
    (("10", "g@notspam.com", "0", None, "0"), None),  # notspam.com is not under spam.com
]
BLACKLISTED = frozenset({"spam.com", "boss@rival.io"})


def _export(ids: list[str] | None = None) -> pa.Table:
    """The rule cases as an all-string export (ids replaceable, to make a new version)."""
    columns = [list(column) for column in zip(*(row for row, _ in RULE_CASES), strict=True)]
    columns[0] = ids or columns[0]
    names = ["id", "email", "emailInvalid", "unsubscribed", "doNotCall"]
    return pa.table([pa.array(column, pa.string()) for column in columns], names=names)


def test_each_rejected_row_carries_only_the_first_rule_it_failed() -> None:
    curated = curate_table(_export(), Settings(dest="out", blacklist=BLACKLISTED))
    assert curated.rejected["reason"].to_pylist() == [r for _, r in RULE_CASES if r]
    assert curated.kept["id"].to_pylist() == [8, 9, 10]
    assert curated.kept["email"].to_pylist() == ["e@ok.io", "f@ok.io", "g@notspam.com"]
    assert curated.rejected["email"].to_pylist()[4] == "boss@rival.io"
    provenance = ("sourceKey", "sourceEtag")  # added when the rows are staged
    assert curated.kept.schema == pa.schema([f for f in LEAD_SCHEMA if f.name not in provenance])
    assert curated.kept["sourceRow"].to_pylist() == [7, 8, 9]


def test_rules_turned_off_by_settings_let_rows_fall_to_the_next_rule() -> None:
    settings = Settings(
        dest="out", blacklist=BLACKLISTED, drop_unsubscribed=False, drop_email_invalid=False
    )
    reasons = curate_table(_export(), settings).rejected["reason"].to_pylist()
    assert reasons == [
        "missing_id",
        "invalid_email",
        "blacklisted",
        "blacklisted",
        "blacklisted",
        "do_not_call",
        "do_not_call",
    ]


@pytest.mark.parametrize(("policy", "kept"), [("keep", [8, 9, 10]), ("drop", [9, 10])])
def test_the_do_not_call_null_policy_is_a_setting(policy: str, kept: list[int]) -> None:
    settings = Settings.from_batch_input(
        {"Dest": "out", "Blacklist": sorted(BLACKLISTED), "DoNotCallNull": policy}
    )
    curated = curate_table(_export(), settings)
    assert curated.kept["id"].to_pylist() == kept
    assert curated.rejected["reason"].to_pylist().count("do_not_call") == 1 + (policy == "drop")


def test_settings_refuse_typos_and_bad_values() -> None:
    with pytest.raises(ValueError, match="BlackList"):
        Settings.from_batch_input({"Dest": "out", "BlackList": ["spam.com"]})
    with pytest.raises(ValueError, match="DoNotCallNull"):
        Settings.from_batch_input({"Dest": "out", "DoNotCallNull": "maybe"})
    with pytest.raises(ValueError, match="DropUnsubscribed"):
        Settings.from_batch_input({"Dest": "out", "DropUnsubscribed": "false"})
    with pytest.raises(ValueError, match="Blacklist"):
        Settings.from_batch_input({"Dest": "out", "Blacklist": "spam.com"})
    with pytest.raises(ValueError, match="DefaultCountry"):
        Settings.from_batch_input({"Dest": "out", "DefaultCountry": "Atlantis"})
    with pytest.raises(ValueError, match="Dest"):
        Settings.from_batch_input({})
    settings = Settings.from_batch_input({"Dest": "out", "DefaultCountry": "usa"})
    assert settings.default_country == "US"


def test_an_export_without_an_email_column_fails_its_batch() -> None:
    with pytest.raises(WorkerError) as caught:
        curate_table(pa.table({"id": [1]}), Settings(dest="out"))
    assert caught.value.error == "Leads.BadExport"


def test_dedup_keeps_latest_update_then_best_score_then_highest_id() -> None:
    rows = [  # (email, updatedAt, leadScore, id)
        ("a@x.io", 2, 1, 1),
        ("a@x.io", 1, 99, 2),  # latest update beats a better score
        ("b@x.io", 5, 10, 3),
        ("b@x.io", 5, 20, 1),
        ("b@x.io", 5, None, 9),  # then the score
        ("c@x.io", 7, 3, 4),
        ("c@x.io", 7, 3, 8),  # then the id
        ("d@x.io", None, 50, 6),
        ("d@x.io", 1, 0, 5),  # a null update ranks lowest
    ]
    table = pa.table(list(zip(*rows, strict=True)), names=["email", "updatedAt", "leadScore", "id"])
    winners, losers = deduplicate(table)
    assert winners["id"].to_pylist() == [1, 1, 8, 5]
    assert sorted(losers["id"].to_pylist()) == [2, 3, 4, 6, 9]


def test_a_source_that_changed_since_it_was_listed_fails_its_batch(tmp_path: Path) -> None:
    export = tmp_path / "in" / "a.parquet"
    export.parent.mkdir()
    pq.write_table(_export(), export)
    item = {
        "Key": "a.parquet",
        "Etag": '"0123456789abcdef0123456789abcdef"',
        "Source": str(tmp_path / "in"),
    }
    with pytest.raises(WorkerError) as caught:
        leads.curate(pa.Table.from_pylist([item]), {"Dest": str(tmp_path / "out")})
    assert caught.value.error == "Leads.SourceChanged"


# -- the pipeline, on S3 ----------------------------------------------------------------------


@dataclass
class S3Run:
    bucket: str
    source: str
    dest: str
    summary: dict[str, Any]
    output: dict[str, Any]
    client: Any

    def keys(self, prefix: str) -> dict[str, str]:
        return _keys(self.client, self.bucket, prefix)

    def parquet(self, key: str) -> pa.Table:
        body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return pq.read_table(pa.BufferReader(body))


def _keys(client: Any, bucket: str, prefix: str) -> dict[str, str]:
    """Key -> bare ETag of every object under ``prefix``."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"]: o["ETag"].strip('"') for page in pages for o in page.get("Contents", [])}


def _run_pipeline(source: str, dest: str, spec: MapSpec | None = None, **options: Any) -> Any:
    result = run(
        spec or MapSpec.load(PIPELINE), source=source, dest=dest, executor="threads", **options
    )
    assert result.status == RunStatus.SUCCEEDED, (result.error, result.cause)
    assert result.reduce is not None and result.reduce.succeeded, result.reduce
    return result


@pytest.fixture(scope="module")
def s3_run(s3_server: Any, tmp_path_factory: pytest.TempPathFactory) -> S3Run:
    client = s3_server.client()
    bucket = f"leads-{os.getpid()}"
    client.create_bucket(Bucket=bucket)
    source, dest = f"s3://{bucket}/incoming/", f"s3://{bucket}/crm"
    summary = leads_sample(source)
    result = _run_pipeline(source, dest, state_dir=str(tmp_path_factory.mktemp("state")))
    return S3Run(bucket, source, dest, summary, result.reduce.output, client)


def _marker(s3_run: S3Run) -> dict[str, Any]:
    (key,) = s3_run.keys("crm/leads/commits/")
    return json.loads(s3_run.client.get_object(Bucket=s3_run.bucket, Key=key)["Body"].read())


def test_the_funnel_matches_the_planted_truth_rule_by_rule(s3_run: S3Run) -> None:
    truth, output = s3_run.summary["truth"], s3_run.output
    assert {name: output[name] for name in FUNNEL} == {name: truth[name] for name in FUNNEL}
    assert output["rejects"] == {reason: truth[reason] for reason in REASONS}
    assert output["deduplicated"] == truth["curated"]
    assert output["archived"] == s3_run.summary["objects"] == 6
    assert output["commits"] == [output["new_commit"]]
    assert output["left_in_place"] == output["missing"] == []
    # Every planted kind of dirt occurs, so no rule is checked against zero.
    assert min(truth[reason] for reason in REASONS) > 10


def test_curated_leads_are_unique_normalised_and_typed(s3_run: S3Run) -> None:
    marker = _marker(s3_run)
    (key,) = s3_run.keys("crm/leads/curated/")
    assert marker["outputs"]["curated"] == f"s3://{s3_run.bucket}/{key}"
    curated = s3_run.parquet(key)
    assert curated.schema == LEAD_SCHEMA
    truth = s3_run.summary["truth"]
    rows = curated.to_pylist()
    emails = [row["email"] for row in rows]
    assert len(rows) == truth["curated"] and len(set(emails)) == len(emails)
    assert all(email == email.strip().lower() and "@" in email for email in emails)
    phones = [row["phone"] for row in rows if row["phone"] is not None]
    assert len(phones) == truth["curated_phones"] and all(E164.fullmatch(p) for p in phones)
    countries = [row["country"] for row in rows if row["country"] is not None]
    assert len(countries) == truth["curated_countries"]
    assert set(countries) == {"US", "GB", "DE", "FR", "CA", "AU", "NL", "ES", "IE", "BR"}
    assert all(row["id"] is not None for row in rows)
    assert not any(row["unsubscribed"] or row["emailInvalid"] or row["doNotCall"] for row in rows)
    kept_null = sum(row["doNotCall"] is None for row in rows)
    assert kept_null == truth["do_not_call_null"]  # DoNotCallNull: keep
    for example in s3_run.summary["examples"]:
        row = next(r for r in rows if r["email"] == example["email"])
        expected = {k: example[k] for k in ("phone", "country", "firstName", "lastName")}
        assert {k: row[k] for k in expected} == expected, example["given"]


def test_duplicates_are_won_by_latest_update_then_score_then_id(s3_run: S3Run) -> None:
    (key,) = s3_run.keys("crm/leads/curated/")
    rows = {row["email"]: row for row in s3_run.parquet(key).to_pylist()}
    winners = s3_run.summary["winners"]  # five groups decided by each tie-break key
    assert list(winners) == ["updatedAt", "leadScore", "id"]
    assert [len(found) for found in winners.values()] == [5, 5, 5]
    for winner in (winner for found in winners.values() for winner in found):
        row = rows[winner["email"]]
        got = (row["id"], row["leadScore"], row["updatedAt"].isoformat(), row["sourceKey"])
        expected = (winner["id"], winner["leadScore"], winner["updatedAt"])
        assert got == (*expected, f"incoming/{winner['file']}"), winner


def test_every_raw_row_ends_curated_or_rejected_with_one_reason(s3_run: S3Run) -> None:
    (curated_key,) = s3_run.keys("crm/leads/curated/")
    (rejects_key,) = s3_run.keys("crm/leads/rejects/")
    curated, rejects = s3_run.parquet(curated_key), s3_run.parquet(rejects_key)
    assert rejects.schema == REJECT_SCHEMA and rejects["reason"].null_count == 0
    reasons = rejects["reason"].to_pylist()
    assert {reason: reasons.count(reason) for reason in REASONS} == {
        reason: s3_run.summary["truth"][reason] for reason in REASONS
    }
    # Provenance: each source row is accounted for exactly once, curated or rejected.
    origin = [
        (r["sourceKey"], r["sourceRow"])
        for t in (curated, rejects)
        for r in t.select(["sourceKey", "sourceRow"]).to_pylist()
    ]
    assert len(origin) == len(set(origin)) == s3_run.summary["truth"]["raw"]
    losers = {r["email"] for r in rejects.to_pylist() if r["reason"] == "duplicate"}
    assert losers <= set(curated["email"].to_pylist())


def test_sources_are_archived_under_their_commit(s3_run: S3Run) -> None:
    marker = _marker(s3_run)
    assert s3_run.keys("incoming/") == {}
    archived = s3_run.keys("crm/leads/archive/")
    commit = marker["commit"]
    assert commit == s3_run.output["new_commit"]
    assert commit == leads.commit_id((s["key"], s["etag"]) for s in marker["sources"])
    expected = {
        f"crm/leads/archive/commit={commit}/{s['key']}": s["etag"] for s in marker["sources"]
    }
    assert archived == expected  # the very versions committed, and nothing else
    names = sorted(s["key"].removeprefix("incoming/") for s in marker["sources"])
    assert names == sorted(f["key"] for f in s3_run.summary["files"])


def test_a_crash_between_commit_and_archive_is_repaired_by_a_rerun(
    s3_server: Any, bucket: str, s3_client: Any, tmp_path: Path
) -> None:
    source, dest = f"s3://{bucket}/incoming/", f"s3://{bucket}/crm"
    summary = leads_sample(source, count=600, seed=11)
    listed = _keys(s3_client, bucket, "incoming/")
    # The CLI with the reduce step dying right after its commit (tests/leads_crash.py)
    command = [sys.executable, "-m", "tests.leads_crash", "run", str(PIPELINE)]
    command += ["--executor", "threads", "--source", source, "--dest", dest]
    crashed = subprocess.run(
        command,
        env={**os.environ, "PYTHONPATH": str(ROOT)},  # tests.* from tmp_path, the cwd
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert crashed.returncode == leads_crash.EXIT_CODE, crashed.stdout + crashed.stderr
    assert "reduce leads-reduce" not in crashed.stdout  # it died inside the reduce step
    # Committed (marker and outputs are there) but nothing archived: the sources are untouched.
    (marker_key,) = _keys(s3_client, bucket, "crm/leads/commits/")
    assert _keys(s3_client, bucket, "incoming/") == listed
    assert _keys(s3_client, bucket, "crm/leads/archive/") == {}

    rerun = _run_pipeline(source, dest).reduce.output
    first_commit = marker_key.rsplit("/", 1)[1].removesuffix(".json")
    assert rerun["new_commit"] is None and rerun["commits"] == [first_commit]
    truth = summary["truth"]
    assert {name: rerun[name] for name in FUNNEL} == {name: truth[name] for name in FUNNEL}
    assert rerun["archived"] == len(listed) and _keys(s3_client, bucket, "incoming/") == {}
    assert len(_keys(s3_client, bucket, "crm/leads/commits/")) == 1
    emails = []
    for key in _keys(s3_client, bucket, "crm/leads/curated/"):  # every commit directory
        body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
        emails += pq.read_table(pa.BufferReader(body))["email"].to_pylist()
    assert len(emails) == len(set(emails)) == truth["curated"]


# -- local folders: reruns, settings, a changed source ----------------------------------------


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def test_after_a_crash_a_new_export_gets_its_own_commit(tmp_path: Path) -> None:
    incoming, dest = tmp_path / "incoming", tmp_path / "crm"
    leads_sample(str(incoming), count=240, seed=5)
    (incoming / "README.txt").write_text("exports land here\n")
    first = _run_pipeline(str(incoming), str(dest)).reduce.output
    (commit_a,) = first["commits"]
    marker_a = (dest / "leads" / "commits" / f"{commit_a}.json").read_bytes()
    assert first["archived"] == 6 and first["missing"] == []
    assert (incoming / "README.txt").exists()  # not an export: skipped, never moved
    # The state a crash after the commit leaves: the committed sources back where they were.
    archive_a = dest / "leads" / "archive" / f"commit={commit_a}"
    shutil.copytree(archive_a, incoming, dirs_exist_ok=True)
    shutil.rmtree(archive_a)
    fresh = pa.table({"id": [1, 2, 3], "email": ["new1@acme.com", "new2@acme.com", "x@"]})
    pq.write_table(fresh, incoming / "2024-07.parquet")
    commit_b = leads.commit_id([("2024-07.parquet", _md5(incoming / "2024-07.parquet"))])

    second = _run_pipeline(str(incoming), str(dest)).reduce.output
    assert second["new_commit"] == commit_b and second["commits"] == sorted([commit_a, commit_b])
    assert second["archived"] == 7
    assert [p.name for p in incoming.rglob("*") if p.is_file()] == ["README.txt"]
    assert (dest / "leads" / "commits" / f"{commit_a}.json").read_bytes() == marker_a
    assert len(list(archive_a.rglob("*.parquet"))) == 6  # re-archived under their own commit
    curated_b = pq.read_table(dest / "leads" / "curated" / f"commit={commit_b}")
    assert sorted(curated_b["email"].to_pylist()) == ["new1@acme.com", "new2@acme.com"]


def test_dropping_null_do_not_call_through_the_pipeline(tmp_path: Path) -> None:
    summary = leads_sample(str(tmp_path / "incoming"), count=600, seed=3)
    truth = summary["truth"]
    data = yaml.safe_load(PIPELINE.read_text())
    data["ItemBatcher"]["BatchInput"]["DoNotCallNull"] = "drop"
    output = _run_pipeline(
        str(tmp_path / "incoming"), str(tmp_path / "crm"), spec=MapSpec.from_dict(data)
    ).reduce.output
    assert truth["do_not_call_null"] > 0
    assert output["rejects"]["do_not_call"] == truth["do_not_call"] + truth["do_not_call_null"]
    assert output["deduplicated"] == truth["curated"] - truth["do_not_call_null"]


def test_a_source_changed_after_curation_is_committed_but_left_in_place(tmp_path: Path) -> None:
    incoming, dest = tmp_path / "incoming", tmp_path / "crm"
    incoming.mkdir()
    pq.write_table(_export(), incoming / "a.parquet")
    item = {"Key": "a.parquet", "Etag": _md5(incoming / "a.parquet"), "Source": str(incoming)}
    batch_input = {"Dest": str(dest), "Blacklist": sorted(BLACKLISTED)}
    outputs = [leads.curate(pa.Table.from_pylist([item]), batch_input)]
    pq.write_table(_export(ids=[str(n) for n in range(10)]), incoming / "a.parquet")  # new version

    context = _Context(batch_input=batch_input, destination=str(dest), outputs_=outputs)
    output = leads.reduce(context)  # type: ignore[arg-type]
    assert output["new_commit"] and output["deduplicated"] == 3
    assert output["left_in_place"] == ["a.parquet"] and output["archived"] == 0
    assert (incoming / "a.parquet").exists() and not (dest / "leads" / "archive").exists()


@dataclass
class _Context:
    """The part of runner.reduce.ReduceContext the reducer uses, without a Map Run."""

    batch_input: Any
    destination: str
    outputs_: list[Any]
    run_id: str = "test"

    def outputs(self) -> Any:
        return iter(self.outputs_)


def test_the_sample_is_deterministic_per_seed(tmp_path: Path) -> None:
    def digests(folder: Path) -> dict[str, str]:
        return {str(p.relative_to(folder)): _md5(p) for p in folder.rglob("*.parquet")}

    one = leads_sample(str(tmp_path / "a"), count=120, seed=1)
    assert one == leads_sample(str(tmp_path / "b"), count=120, seed=1)
    assert digests(tmp_path / "a") == digests(tmp_path / "b")
    leads_sample(str(tmp_path / "c"), count=120, seed=2)
    assert digests(tmp_path / "a") != digests(tmp_path / "c")


def test_the_pipeline_blacklist_is_the_one_the_sample_plants_against() -> None:
    spec = MapSpec.load(PIPELINE)
    assert spec.item_batcher is not None
    assert tuple(spec.item_batcher.batch_input["Blacklist"]) == BLACKLIST


# -- the notebook -----------------------------------------------------------------------------


def test_the_committed_notebook_has_no_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, cell.source[:60]


def test_the_notebook_plots_the_funnel_and_rejects_of_a_commit(
    s3_run: S3Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The kernel inherits this environment: the S3 endpoint and credentials, and the run.
    monkeypatch.setenv("SHARDMAP_LEADS_DEST", s3_run.dest)
    ran = execute_notebook(NOTEBOOK, tmp_path)
    notebook, outputs, stdout = ran.notebook, ran.outputs, ran.stdout
    truth = s3_run.summary["truth"]
    commit = s3_run.output["new_commit"]
    assert f"commit {commit}: 6 source files, {truth['raw']} raw -> {truth['curated']}" in stdout
    assert "the files match the marker" in stdout
    assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    for tag in PLOTS:
        (cell,) = [c for c in notebook.cells if tag in c.metadata.get("tags", [])]
        images = [o for o in cell.outputs if "image/png" in o.get("data", {})]
        assert len(images) == 1, f"{tag} drew no image: {cell.outputs}"
