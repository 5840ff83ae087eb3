"""Leads curation: marketing lead exports (Parquet) made fit for the CRM. Design and layout:
``docs/workloads-leads.md``.

Map step, :func:`curate` (columnar): an item is one export file (a listObjectsV2 entry plus its
``Source``). Each file is read whole with pyarrow, validated, normalised and filtered by the
per-row rules in :data:`RULES` (first failing rule wins), and staged as two Parquet objects
named by the file's ETag, so a rerun writes the same objects::

    {Dest}/leads/staging/<etag>-<key digest>.parquet           surviving, normalised rows
    {Dest}/leads/staging/<etag>-<key digest>.rejects.parquet   rejected rows, one reason each

Reduce step, :func:`reduce` (driver, once per SUCCEEDED run): deduplicates the staged rows of
the whole run on the normalised email, writes one commit, then archives the sources::

    {Dest}/leads/curated/commit=<id>/curated.parquet
    {Dest}/leads/rejects/commit=<id>/rejects.parquet
    {Dest}/leads/commits/<id>.json                     the commit marker, written last
    {ArchiveTo}/commit=<id>/<source key>               sources, moved after the marker exists

``<id>`` hashes the sorted (key, etag) of the commit's source files. A source file already
named by a commit marker is never committed again, which makes a rerun after a crash safe.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from email_validator import EmailNotValidError, validate_email

from runner import WorkerError, worker
from runner.reduce import ReduceContext
from workers.locations import bare_etag, location_url, object_url

__all__ = [
    "DUPLICATE",
    "LEAD_SCHEMA",
    "REASONS",
    "REJECT_SCHEMA",
    "RULES",
    "Curated",
    "Settings",
    "SourceChanged",
    "coerce_bool",
    "commit_id",
    "curate",
    "curate_table",
    "deduplicate",
    "normalize_countries",
    "normalize_emails",
    "normalize_names",
    "normalize_phones",
    "object_url",
    "reduce",
    "staging_urls",
]

#: Per-row rules in the order they are judged; a rejected row carries the first that failed.
RULES = (
    "missing_id",  # no id, or one that is not an integer
    "invalid_email",  # missing, or fails email-validator's syntax checks
    "email_invalid_flag",  # the marketing system marked the address as bouncing
    "blacklisted",  # the email, or its domain or a parent domain, is on BatchInput.Blacklist
    "unsubscribed",
    "do_not_call",  # doNotCall true, or null when DoNotCallNull is "drop"
)
#: The reduce step's rule: a lead that lost to another with the same normalised email.
DUPLICATE = "duplicate"
REASONS = (*RULES, DUPLICATE)

_TEXT_COLUMNS = ("company", "title", "city", "state", "postalCode", "leadSource", "industry")
_FLAG_COLUMNS = ("doNotCall", "unsubscribed", "emailInvalid")
_TIMESTAMP = pa.timestamp("ms", tz="UTC")

#: The staged and curated columns: the Marketo fields the CRM takes, normalised, plus
#: provenance. Columns an export has beyond these are not carried.
LEAD_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("email", pa.string()),
        ("firstName", pa.string()),
        ("lastName", pa.string()),
        ("phone", pa.string()),  # E.164, or null when absent or not a valid number
        ("company", pa.string()),
        ("country", pa.string()),  # ISO 3166-1 alpha-2, or null when unknown
        ("title", pa.string()),
        ("city", pa.string()),
        ("state", pa.string()),
        ("postalCode", pa.string()),
        ("leadSource", pa.string()),
        ("industry", pa.string()),
        ("doNotCall", pa.bool_()),
        ("unsubscribed", pa.bool_()),
        ("emailInvalid", pa.bool_()),
        ("leadScore", pa.int64()),
        ("createdAt", _TIMESTAMP),
        ("updatedAt", _TIMESTAMP),
        ("sourceKey", pa.string()),
        ("sourceEtag", pa.string()),
        ("sourceRow", pa.int64()),
    ]
)
#: Rejected rows: the same columns (email lower-cased and trimmed even when invalid) + reason.
REJECT_SCHEMA = LEAD_SCHEMA.append(pa.field("reason", pa.string()))


# ---------------------------------------------------------------------------------------------
# settings


@dataclass(frozen=True)
class Settings:
    """The workload's settings, read from ``ItemBatcher.BatchInput`` (pipelines/leads.yaml)."""

    dest: str  # Dest: where leads/ goes, usually $$.Shardmap.Destination
    blacklist: frozenset[str] = frozenset()  # Blacklist: emails and domains, lower-case
    do_not_call_null: Literal["keep", "drop"] = "keep"  # DoNotCallNull
    drop_do_not_call: bool = True  # DropDoNotCall
    drop_unsubscribed: bool = True  # DropUnsubscribed
    drop_email_invalid: bool = True  # DropEmailInvalid
    default_country: str | None = None  # DefaultCountry: phone region when a lead has none
    archive_to: str | None = None  # ArchiveTo: default {Dest}/leads/archive
    source: str | None = None  # Source: where listed keys live when items carry no Source

    _KEYS = {
        "Dest": "dest",
        "Blacklist": "blacklist",
        "DoNotCallNull": "do_not_call_null",
        "DropDoNotCall": "drop_do_not_call",
        "DropUnsubscribed": "drop_unsubscribed",
        "DropEmailInvalid": "drop_email_invalid",
        "DefaultCountry": "default_country",
        "ArchiveTo": "archive_to",
        "Source": "source",
    }

    @classmethod
    def from_batch_input(cls, batch_input: Any, dest: str | None = None) -> Settings:
        """Validate BatchInput; an unknown key is an error, so a typo cannot turn a rule off.

        >>> Settings.from_batch_input({"Dest": "out", "Blacklist": ["Spam.com"]}).blacklist
        frozenset({'spam.com'})
        """
        given = dict(batch_input or {})
        unknown = sorted(set(given) - set(cls._KEYS))
        if unknown:
            known = ", ".join(cls._KEYS)
            raise ValueError(f"unknown leads BatchInput setting(s) {unknown}; known: {known}")
        values = {cls._KEYS[name]: value for name, value in given.items()}
        values.setdefault("dest", dest)
        if not values["dest"]:
            raise ValueError("leads needs BatchInput.Dest (Dest.$: $$.Shardmap.Destination)")
        values["dest"] = location_url(values["dest"]).rstrip("/")
        if values.get("do_not_call_null", "keep") not in ("keep", "drop"):
            raise ValueError('DoNotCallNull must be "keep" or "drop"')
        for name in ("DropDoNotCall", "DropUnsubscribed", "DropEmailInvalid"):
            if not isinstance(given.get(name, True), bool):  # "false" would read as true
                raise ValueError(f"{name} must be true or false, not {given[name]!r}")
        blacklist = values.get("blacklist") or []
        if not isinstance(blacklist, list) or not all(isinstance(e, str) for e in blacklist):
            raise ValueError("Blacklist must be a list of emails and domains")
        values["blacklist"] = frozenset(entry.strip().lower() for entry in blacklist)
        if values.get("default_country"):
            code = _country_code(values["default_country"])
            if code is None:
                raise ValueError(f"DefaultCountry {values['default_country']!r} is no country")
            values["default_country"] = code
        return cls(**values)

    @property
    def root(self) -> str:
        return f"{self.dest}/leads"

    @property
    def archive_root(self) -> str:
        return (
            location_url(self.archive_to).rstrip("/") if self.archive_to else f"{self.root}/archive"
        )

    def summary(self) -> dict[str, Any]:
        """The settings that shape a commit's content, recorded in its marker."""
        return {
            "Blacklist": sorted(self.blacklist),
            "DoNotCallNull": self.do_not_call_null,
            "DropDoNotCall": self.drop_do_not_call,
            "DropUnsubscribed": self.drop_unsubscribed,
            "DropEmailInvalid": self.drop_email_invalid,
            "DefaultCountry": self.default_country,
        }


# ---------------------------------------------------------------------------------------------
# normalisers: vectorised where pyarrow can, Python once per distinct value where it cannot

_TRUE = pa.array(["true", "t", "yes", "y", "1", "1.0"])
_FALSE = pa.array(["false", "f", "no", "n", "0", "0.0"])


def coerce_bool(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Booleans from any export encoding; anything unrecognised becomes null.

    Exports disagree file by file: real booleans, ``"true"``/``"False"``/``"yes"``/``"1"``
    strings, ``1``/``0`` integers, nulls.

    >>> coerce_bool(pa.array(["true", " False", "yes", "1", "maybe", None])).to_pylist()
    [True, False, True, True, None, None]
    """
    values = _one_chunk(values)
    kind = values.type
    if pa.types.is_boolean(kind):
        return values
    if pa.types.is_null(kind):
        return pa.nulls(len(values), pa.bool_())
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return pc.not_equal(values, 0)
    text = pc.utf8_lower(pc.utf8_trim_whitespace(values.cast(pa.string())))
    unknown = pa.scalar(None, pa.bool_())
    return pc.if_else(
        pc.is_in(text, value_set=_TRUE),
        True,
        pc.if_else(pc.is_in(text, value_set=_FALSE), False, unknown),
    )


def normalize_emails(values: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, pa.Array]:
    """``(cleaned, valid)``: every email lower-cased and trimmed, and the validated form or null.

    Validation is email-validator's syntax check without DNS (``check_deliverability=False``),
    once per distinct address. The validated form is the dedup key (an IDNA domain is
    spelled in Unicode either way, so ``xn--bcher-kva.de`` and ``bücher.de`` match).

    >>> cleaned, valid = normalize_emails(pa.array([" Ann@Acme.COM ", "ann@", None]))
    >>> cleaned.to_pylist(), valid.to_pylist()
    (['ann@acme.com', 'ann@', None], ['ann@acme.com', None, None])
    """
    cleaned = _clean_text(values, lower=True)
    return cleaned, _map_distinct(cleaned, _validated_email, pa.string())


def normalize_phones(
    phones: pa.Array | pa.ChunkedArray,
    countries: pa.Array | pa.ChunkedArray,
    default_country: str | None = None,
) -> pa.Array:
    """Phones in E.164, parsed with each row's ISO country as the region; null when invalid.

    A national number needs a region (the row's country, else ``default_country``); an
    international one (``+44 ...``) parses without. Runs once per distinct (phone, region).

    >>> normalize_phones(pa.array(["(201) 555-0123", "07400 123456"]),
    ...                  pa.array(["US", "GB"])).to_pylist()
    ['+12015550123', '+447400123456']
    """
    text = _clean_text(phones)
    region = _one_chunk(countries).cast(pa.string())
    if default_country:
        region = pc.fill_null(region, default_country)
    # One key per (phone, region); a phone with no region keeps an empty region part.
    keys = pc.binary_join_element_wise(text, pc.fill_null(region, ""), "\x1f")
    return _map_distinct(keys, _e164, pa.string())


def normalize_countries(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """ISO 3166-1 alpha-2 codes from names, alpha-3 and alpha-2 spellings; null when unknown.

    >>> given = pa.array(["United States", "deu", " gb ", "U.K.", "Atlantis"])
    >>> normalize_countries(given).to_pylist()
    ['US', 'DE', 'GB', 'GB', None]
    """
    return _map_distinct(_clean_text(values), _country_code, pa.string())


def normalize_names(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Names trimmed, inner whitespace collapsed, and title-cased only when all upper or all
    lower case: ``"ANNE-MARIE"`` -> ``"Anne-Marie"``, ``"o'brien"`` -> ``"O'Brien"``, but a
    deliberate ``"McDonald"`` stays as it is.

    >>> normalize_names(pa.array([" JOHN ", "o'brien", "McDonald", ""])).to_pylist()
    ['John', "O'Brien", 'McDonald', None]
    """
    text = _clean_text(values)
    one_case = pc.or_(pc.equal(text, pc.utf8_upper(text)), pc.equal(text, pc.utf8_lower(text)))
    return pc.if_else(one_case, pc.utf8_title(text), text)


def _one_chunk(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _clean_text(values: pa.Array | pa.ChunkedArray, lower: bool = False) -> pa.Array:
    """Strings trimmed with inner whitespace collapsed; empty becomes null."""
    text = _one_chunk(values).cast(pa.string())
    text = pc.utf8_trim_whitespace(pc.replace_substring_regex(text, r"\s+", " "))
    if lower:
        text = pc.utf8_lower(text)
    return pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)


def _map_distinct(values: pa.Array, fn: Callable[[Any], Any], kind: pa.DataType) -> pa.Array:
    """``fn`` applied once per distinct non-null value (exports repeat values a lot)."""
    encoded = values.dictionary_encode()
    mapped = pa.array([fn(value) for value in encoded.dictionary.to_pylist()], type=kind)
    return mapped.take(encoded.indices)


def _validated_email(address: str) -> str | None:
    try:
        return validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError:
        return None


def _e164(key: str) -> str | None:
    raw, _, region = key.partition("\x1f")
    try:
        number = phonenumbers.parse(raw, region or None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _parse_int(text: str) -> int | None:
    try:
        return int(text)  # exact, however large
    except ValueError:
        pass
    try:  # "123.0": an id that went through a spreadsheet
        number = float(text)
    except ValueError:
        return None
    return int(number) if number.is_integer() else None


def _parse_timestamp(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    # A naive timestamp in an export is taken to be UTC, as Marketo writes them.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _to_int(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    values = _one_chunk(values)
    if pa.types.is_integer(values.type):
        return values.cast(pa.int64())
    return _map_distinct(_clean_text(values), _parse_int, pa.int64())


def _to_timestamp(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    values = _one_chunk(values)
    kind = values.type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        return values.cast(_TIMESTAMP)  # a naive timestamp's epoch value is read as UTC
    if pa.types.is_integer(kind):  # epoch milliseconds, or seconds when too small for those
        seconds = pc.less(pc.abs(values), 100_000_000_000)
        millis = pc.if_else(seconds, pc.multiply(values, 1000), values)
        return millis.cast(pa.int64()).cast(_TIMESTAMP)
    return _map_distinct(_clean_text(values), _parse_timestamp, _TIMESTAMP)


# ISO 3166-1 alpha-2 -> alpha-3 and the names and variants exports use. A small explicit
# table (no pycountry dependency); extend it when an unknown country shows up in the counts.
_COUNTRIES: dict[str, tuple[str, ...]] = {
    "AE": ("ARE", "United Arab Emirates", "UAE", "Emirates"),
    "AR": ("ARG", "Argentina"),
    "AT": ("AUT", "Austria", "Österreich"),
    "AU": ("AUS", "Australia"),
    "BE": ("BEL", "Belgium", "Belgique", "België"),
    "BR": ("BRA", "Brazil", "Brasil"),
    "CA": ("CAN", "Canada"),
    "CH": ("CHE", "Switzerland", "Schweiz", "Suisse"),
    "CL": ("CHL", "Chile"),
    "CN": ("CHN", "China", "People's Republic of China", "PRC"),
    "CO": ("COL", "Colombia"),
    "CZ": ("CZE", "Czech Republic", "Czechia"),
    "DE": ("DEU", "Germany", "Deutschland"),
    "DK": ("DNK", "Denmark", "Danmark"),
    "EG": ("EGY", "Egypt"),
    "ES": ("ESP", "Spain", "España", "Espana"),
    "FI": ("FIN", "Finland", "Suomi"),
    "FR": ("FRA", "France"),
    "GB": ("GBR", "United Kingdom", "UK", "Great Britain", "Britain", "England", "Scotland",
           "Wales", "Northern Ireland", "United Kingdom of Great Britain and Northern Ireland"),
    "GR": ("GRC", "Greece"),
    "HK": ("HKG", "Hong Kong"),
    "HU": ("HUN", "Hungary"),
    "ID": ("IDN", "Indonesia"),
    "IE": ("IRL", "Ireland", "Republic of Ireland", "Éire", "Eire"),
    "IL": ("ISR", "Israel"),
    "IN": ("IND", "India"),
    "IT": ("ITA", "Italy", "Italia"),
    "JP": ("JPN", "Japan"),
    "KE": ("KEN", "Kenya"),
    "KR": ("KOR", "South Korea", "Korea", "Republic of Korea", "Korea, Republic of"),
    "LU": ("LUX", "Luxembourg"),
    "MX": ("MEX", "Mexico", "México"),
    "MY": ("MYS", "Malaysia"),
    "NG": ("NGA", "Nigeria"),
    "NL": ("NLD", "Netherlands", "The Netherlands", "Holland", "Nederland"),
    "NO": ("NOR", "Norway", "Norge"),
    "NZ": ("NZL", "New Zealand"),
    "PH": ("PHL", "Philippines"),
    "PL": ("POL", "Poland", "Polska"),
    "PT": ("PRT", "Portugal"),
    "RO": ("ROU", "Romania"),
    "SA": ("SAU", "Saudi Arabia"),
    "SE": ("SWE", "Sweden", "Sverige"),
    "SG": ("SGP", "Singapore"),
    "TH": ("THA", "Thailand"),
    "TR": ("TUR", "Turkey", "Türkiye", "Turkiye"),
    "TW": ("TWN", "Taiwan"),
    "UA": ("UKR", "Ukraine"),
    "US": ("USA", "United States", "United States of America", "America", "U.S.", "U.S.A."),
    "VN": ("VNM", "Vietnam", "Viet Nam"),
    "ZA": ("ZAF", "South Africa"),
}  # fmt: skip


def _country_key(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace(".", "").strip()).casefold()


_COUNTRY_CODES = {
    _country_key(spelling): code
    for code, spellings in _COUNTRIES.items()
    for spelling in (code, *spellings)
}


def _country_code(text: str) -> str | None:
    return _COUNTRY_CODES.get(_country_key(text))


# ---------------------------------------------------------------------------------------------
# the per-file transformation (pure: tables in, tables out)


@dataclass(frozen=True)
class Curated:
    """One export after the per-row rules."""

    kept: pa.Table  # rows that passed, in LEAD_SCHEMA order; of provenance only sourceRow
    rejected: pa.Table  # rows that failed, with ``reason``: the first rule of RULES they failed
    notes: dict[str, int]  # values given but not normalisable (the row is kept, value null)


def curate_table(raw: pa.Table, settings: Settings) -> Curated:
    """Normalise one export and judge every row by :data:`RULES`, first failing rule wins.

    >>> raw = pa.table({"id": [1, None], "email": ["A@B.io", "c@d.io"]})
    >>> curated = curate_table(raw, Settings(dest="out"))
    >>> curated.kept["email"].to_pylist(), curated.rejected["reason"].to_pylist()
    (['a@b.io'], ['missing_id'])
    """
    columns = _columns_by_lower_name(raw)
    for required in ("id", "email"):
        if required not in columns:
            raise WorkerError("Leads.BadExport", f"the export has no {required!r} column")
    leads, valid_email = _normalised(raw, columns, settings)
    reason = _first_failing_rule(leads, valid_email, settings)
    # A valid address is kept in its validated form (the dedup key), an invalid one as cleaned.
    email = pc.coalesce(valid_email, leads["email"])
    leads = leads.set_column(leads.schema.get_field_index("email"), "email", email)
    # The row's position in the export, taken before filtering, to trace any row back.
    leads = leads.append_column("sourceRow", pa.array(range(raw.num_rows), pa.int64()))
    kept = leads.filter(pc.is_null(reason))
    return Curated(
        kept=kept,
        rejected=leads.append_column("reason", reason).filter(pc.is_valid(reason)),
        notes={
            "phone_unnormalised": _unnormalised(raw, columns, "phone", leads),
            "country_unknown": _unnormalised(raw, columns, "country", leads),
        },
    )


def _unnormalised(raw: pa.Table, columns: Mapping[str, str], name: str, leads: pa.Table) -> int:
    """Rows where ``name`` was given but normalised to null (an unknown country, a bad phone)."""
    if name not in columns:
        return 0
    given = pc.is_valid(_clean_text(raw[columns[name]]))
    return pc.sum(pc.and_(given, pc.is_null(leads[name]))).as_py() or 0


def _columns_by_lower_name(table: pa.Table) -> dict[str, str]:
    """Export column names matched case-insensitively (``Email`` and ``email`` both do)."""
    return {name.lower(): name for name in reversed(table.column_names)}


def _normalised(
    raw: pa.Table, columns: Mapping[str, str], settings: Settings
) -> tuple[pa.Table, pa.Array]:
    """The export in :data:`LEAD_SCHEMA` order (provenance left out) and the validated emails."""

    def column(name: str) -> pa.Array:
        actual = columns.get(name.lower())
        return _one_chunk(raw[actual]) if actual else pa.nulls(raw.num_rows)

    cleaned_email, valid_email = normalize_emails(column("email"))
    country = normalize_countries(column("country"))
    arrays: dict[str, pa.Array] = {
        "id": _to_int(column("id")),
        "email": cleaned_email,
        "firstName": normalize_names(column("firstName")),
        "lastName": normalize_names(column("lastName")),
        "phone": normalize_phones(column("phone"), country, settings.default_country),
        "country": country,
    }
    for name in _TEXT_COLUMNS:
        arrays[name] = _clean_text(column(name))
    for name in _FLAG_COLUMNS:
        arrays[name] = coerce_bool(column(name))
    arrays["leadScore"] = _to_int(column("leadScore"))
    arrays["createdAt"] = _to_timestamp(column("createdAt"))
    arrays["updatedAt"] = _to_timestamp(column("updatedAt"))
    schema = pa.schema([field for field in LEAD_SCHEMA if field.name in arrays])
    return pa.table([arrays[name] for name in schema.names], schema=schema), valid_email


def _first_failing_rule(leads: pa.Table, valid_email: pa.Array, settings: Settings) -> pa.Array:
    """One reason per row, or null for a row that passes: the first of :data:`RULES` failed."""
    failed = {
        "missing_id": pc.is_null(leads["id"]),
        "invalid_email": pc.is_null(valid_email),
        "email_invalid_flag": _flag(leads["emailInvalid"], settings.drop_email_invalid),
        "blacklisted": _blacklisted(valid_email, settings.blacklist),
        "unsubscribed": _flag(leads["unsubscribed"], settings.drop_unsubscribed),
        "do_not_call": _do_not_call(leads["doNotCall"], settings),
    }
    reason = pa.nulls(leads.num_rows, pa.string())
    for rule in RULES:
        hit = pc.and_(pc.is_null(reason), pc.fill_null(failed[rule], False))
        reason = pc.if_else(hit, rule, reason)
    return reason


def _flag(values: pa.ChunkedArray, drop: bool) -> pa.Array:
    # A null emailInvalid/unsubscribed is "not set"; only doNotCall has a null policy.
    if not drop:
        return pa.nulls(len(values), pa.bool_())
    return pc.fill_null(_one_chunk(values), False)


def _do_not_call(values: pa.ChunkedArray, settings: Settings) -> pa.Array:
    if not settings.drop_do_not_call:
        return pa.nulls(len(values), pa.bool_())
    return pc.fill_null(_one_chunk(values), settings.do_not_call_null == "drop")


def _blacklisted(emails: pa.Array, blacklist: frozenset[str]) -> pa.Array:
    if not blacklist:
        return pa.nulls(len(emails), pa.bool_())
    return _map_distinct(emails, lambda email: _on_blacklist(email, blacklist), pa.bool_())


def _on_blacklist(email: str, blacklist: frozenset[str]) -> bool:
    """The address itself, its domain, or a parent domain (``eu.spam.com`` under ``spam.com``)."""
    if email in blacklist:
        return True
    labels = email.rpartition("@")[2].split(".")
    return any(".".join(labels[start:]) in blacklist for start in range(len(labels) - 1))


# ---------------------------------------------------------------------------------------------
# storage: S3 through boto3 (for its conditional requests), and local folders


class SourceChanged(WorkerError):
    """A source object is gone or no longer has the listed ETag: it is not the listed version."""

    def __init__(self, error: str = "Leads.SourceChanged", cause: str = "") -> None:
        super().__init__(error, cause)


class _Store(Protocol):
    def get(self, url: str, etag: str | None = None) -> bytes: ...
    def put(self, url: str, data: bytes) -> None: ...
    def exists(self, url: str) -> bool: ...
    def keys(self, folder_url: str) -> list[str]: ...
    def copy(self, source: str, target: str, etag: str) -> bool: ...
    def delete(self, url: str, etag: str) -> bool: ...


def _store(url: str, cache: dict[str, _Store]) -> _Store:
    kind = "s3" if url.startswith("s3://") else "local"
    if kind not in cache:
        cache[kind] = _S3Store() if kind == "s3" else _LocalStore()
    return cache[kind]


_CHANGED = ("PreconditionFailed", "412")
_MISSING = ("NoSuchKey", "404", "NotFound")


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class _S3Store:
    """S3 through boto3, whose If-Match requests make reads, copies and deletes conditional on
    the ETag (AWS honours If-Match on DeleteObject in general-purpose buckets since 2025)."""

    def __init__(self) -> None:
        import boto3

        # A private session: boto3's default session is not safe to share across threads.
        self.client = boto3.session.Session().client("s3")
        self.errors = self.client.exceptions.ClientError

    @staticmethod
    def _split(url: str) -> tuple[str, str]:
        bucket, _, key = url[len("s3://") :].partition("/")
        return bucket, key

    def get(self, url: str, etag: str | None = None) -> bytes:
        bucket, key = self._split(url)
        condition = {"IfMatch": f'"{bare_etag(etag)}"'} if etag else {}
        try:
            return self.client.get_object(Bucket=bucket, Key=key, **condition)["Body"].read()
        except self.errors as exc:
            if _code(exc) in _CHANGED + _MISSING:
                raise SourceChanged(cause=f"{url} is not the listed version {etag}") from exc
            raise

    def put(self, url: str, data: bytes) -> None:
        bucket, key = self._split(url)
        self.client.upload_fileobj(io.BytesIO(data), bucket, key)  # multipart when large

    def exists(self, url: str) -> bool:
        bucket, key = self._split(url)
        try:
            self.client.head_object(Bucket=bucket, Key=key)
        except self.errors as exc:
            if _code(exc) in _MISSING:
                return False
            raise
        return True

    def keys(self, folder_url: str) -> list[str]:
        bucket, prefix = self._split(folder_url.rstrip("/") + "/")
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [f"s3://{bucket}/{o['Key']}" for page in pages for o in page.get("Contents", [])]

    def copy(self, source: str, target: str, etag: str) -> bool:
        """Server-side copy of exactly that version; False when it changed or is gone.
        (CopyObject takes sources up to 5 GB, far above any lead export.)"""
        (source_bucket, source_key), (bucket, key) = self._split(source), self._split(target)
        try:
            self.client.copy_object(
                Bucket=bucket,
                Key=key,
                CopySource={"Bucket": source_bucket, "Key": source_key},
                CopySourceIfMatch=f'"{bare_etag(etag)}"',
            )
        except self.errors as exc:
            if _code(exc) in _CHANGED + _MISSING:
                return False
            raise
        return True

    def delete(self, url: str, etag: str) -> bool:
        """Delete only that version; False when the object changed since (the new one stays)."""
        bucket, key = self._split(url)
        try:
            self.client.delete_object(Bucket=bucket, Key=key, IfMatch=f'"{bare_etag(etag)}"')
        except self.errors as exc:
            if _code(exc) in _MISSING:
                return True  # gone already: an earlier attempt deleted it
            if _code(exc) in _CHANGED:
                return False
            raise
        return True


class _LocalStore:
    """A folder standing in for a bucket. Writes go through a temporary file and a rename, so
    an object is there whole or not at all; ETags are content MD5s, as the listing reports."""

    def get(self, url: str, etag: str | None = None) -> bytes:
        try:
            with open(url, "rb") as stream:
                data = stream.read()
        except FileNotFoundError as exc:
            raise SourceChanged(cause=f"{url} is gone") from exc
        md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if etag and "-" not in etag and md5 != bare_etag(etag):
            raise SourceChanged(cause=f"{url} is not the listed version {etag}")
        return data

    def put(self, url: str, data: bytes) -> None:
        os.makedirs(os.path.dirname(url), exist_ok=True)
        partial = f"{url}.partial-{uuid.uuid4().hex}"
        with open(partial, "wb") as stream:
            stream.write(data)
        os.replace(partial, url)

    def exists(self, url: str) -> bool:
        return os.path.isfile(url)

    def keys(self, folder_url: str) -> list[str]:
        if not os.path.isdir(folder_url):
            return []
        return [os.path.join(folder_url, name) for name in sorted(os.listdir(folder_url))]

    def copy(self, source: str, target: str, etag: str) -> bool:
        try:
            data = self.get(source, etag)
        except SourceChanged:
            return False
        self.put(target, data)
        return True

    def delete(self, url: str, etag: str) -> bool:
        # Check, then delete: a folder has no conditional delete, so a writer racing this
        # check could lose its file. Local folders are for trying things; S3 has no such race.
        try:
            self.get(url, etag)
        except SourceChanged:
            return not os.path.exists(url)
        os.remove(url)
        return True


def _parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def _read_parquet(store: _Store, url: str, etag: str | None = None) -> pa.Table:
    return pq.read_table(pa.BufferReader(store.get(url, etag)))


# ---------------------------------------------------------------------------------------------
# the map step


@worker(columnar=True)
def curate(table: pa.Table, batch_input: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Validate, normalise and stage lead export files (one listing item per file).

    Returns one entry per item, in item order: ``key``, ``etag``, ``counts`` (raw rows, rows
    per rule, kept rows, values that did not normalise) and the ``staged``/``rejects`` object
    URLs; or ``skipped`` with the reason for a key that is not an export (a README, a folder
    marker, anything under ``{Dest}/leads/``).
    """
    settings = Settings.from_batch_input(batch_input)
    stores: dict[str, _Store] = {}
    return [_curate_file(item, settings, stores) for item in table.to_pylist()]


def staging_urls(settings: Settings, key: str, etag: str) -> tuple[str, str]:
    """The staged and rejects objects of one source version. Named by the ETag so a rerun
    writes the same objects; the key's digest keeps two keys with equal content apart."""
    name = (
        f"{settings.root}/staging/{bare_etag(etag)}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"
    )
    return f"{name}.parquet", f"{name}.rejects.parquet"


def _curate_file(
    item: Mapping[str, Any], settings: Settings, stores: dict[str, _Store]
) -> dict[str, Any]:
    key, etag = item["Key"], bare_etag(item["Etag"])
    source = item.get("Source") or settings.source
    if not source:
        raise ValueError("leads-curate needs item.Source (ItemSelector) or BatchInput.Source")
    url = object_url(source, key)
    entry: dict[str, Any] = {"key": key, "etag": etag, "url": url}
    skipped = _why_skip(key, url, settings)
    if skipped:
        return {**entry, "skipped": skipped}
    raw = _read_export(_store(url, stores), url, etag)
    curated = curate_table(raw, settings)
    staged, rejects = staging_urls(settings, key, etag)
    target = _store(staged, stores)
    target.put(staged, _parquet_bytes(_with_provenance(curated.kept, key, etag, LEAD_SCHEMA)))
    rejected = _with_provenance(curated.rejected, key, etag, REJECT_SCHEMA)
    target.put(rejects, _parquet_bytes(rejected))
    counts = {"raw": raw.num_rows, **_reason_counts(rejected, RULES)}
    counts.update(kept=curated.kept.num_rows, **curated.notes)
    return {**entry, "counts": counts, "staged": staged, "rejects": rejects}


def _why_skip(key: str, url: str, settings: Settings) -> str | None:
    if url.startswith(settings.root + "/"):
        return "under the destination: leads/ outputs are not inputs"
    if not key.lower().endswith((".parquet", ".pq")):
        return "not a .parquet object"
    return None


def _read_export(store: _Store, url: str, etag: str) -> pa.Table:
    data = store.get(url, etag)  # exactly the listed version, or SourceChanged
    try:
        return pq.read_table(pa.BufferReader(data))
    except pa.ArrowInvalid as exc:
        raise WorkerError("Leads.BadExport", f"{url} is not readable Parquet: {exc}") from exc


def _with_provenance(table: pa.Table, key: str, etag: str, schema: pa.Schema) -> pa.Table:
    rows = table.num_rows
    table = table.append_column("sourceKey", pa.array([key] * rows, pa.string()))
    table = table.append_column("sourceEtag", pa.array([etag] * rows, pa.string()))
    return table.select(schema.names).cast(schema)


def _reason_counts(rejected: pa.Table, reasons: Iterable[str]) -> dict[str, int]:
    counts = dict.fromkeys(reasons, 0)
    for entry in pc.value_counts(rejected["reason"]).to_pylist():
        counts[entry["values"]] = entry["counts"]
    return counts


# ---------------------------------------------------------------------------------------------
# the reduce step


@dataclass(frozen=True)
class _Source:
    """One curated source file, as the map step reported it."""

    key: str
    etag: str
    url: str  # where the source object is, for archiving it
    counts: Mapping[str, int]
    staged: str
    rejects: str


def reduce(context: ReduceContext) -> dict[str, Any]:
    """Deduplicate the run's staged leads on email, commit them, then archive the sources.

    Sources already named by a commit marker (same key and ETag: a rerun after a crash) are
    not committed again, only archived. Returns the funnel of the commit(s) the run's sources
    belong to: raw -> valid -> callable -> deduplicated, rejects by reason, and files archived.
    """
    settings = Settings.from_batch_input(context.batch_input, dest=context.destination)
    stores: dict[str, _Store] = {}
    sources = list(_sources(context.outputs()))
    committed = _committed(settings, _store(settings.root, stores))
    covered = [committed[s.key, s.etag] for s in sources if (s.key, s.etag) in committed]
    markers = {marker["commit"]: marker for marker in covered}
    fresh = [s for s in sources if (s.key, s.etag) not in committed]
    new_commit = None
    if fresh:
        new_commit = _commit(fresh, settings, stores, context.run_id)
        markers[new_commit["commit"]] = new_commit
    commit_of = {(s["key"], s["etag"]): m["commit"] for m in markers.values() for s in m["sources"]}
    archive = _archive(sources, commit_of, settings, stores)
    return _funnel(list(markers.values()), new_commit, archive)


def _sources(outputs: Iterator[Any]) -> Iterator[_Source]:
    """The curated files of the run (one output list per batch), each version once."""
    seen: set[tuple[str, str]] = set()
    for output in outputs:
        for entry in output:
            if "skipped" in entry or (entry["key"], entry["etag"]) in seen:
                continue
            seen.add((entry["key"], entry["etag"]))
            fields = ("key", "etag", "url", "counts", "staged", "rejects")
            yield _Source(*(entry[name] for name in fields))


def commit_id(files: Iterable[tuple[str, str]]) -> str:
    """The commit of a set of source versions: a hash of their sorted (key, etag) pairs, so the
    same files always make the same commit, and so the same output objects."""
    text = json.dumps(sorted([key, bare_etag(etag)] for key, etag in files))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _committed(settings: Settings, store: _Store) -> dict[tuple[str, str], dict[str, Any]]:
    """Every committed source version -> its commit marker (markers are small, one per run)."""
    found = {}
    for url in store.keys(f"{settings.root}/commits"):
        if url.endswith(".json"):
            marker = json.loads(store.get(url))
            for source in marker["sources"]:
                found[source["key"], source["etag"]] = marker
    return found


def _commit(
    fresh: list[_Source], settings: Settings, stores: dict[str, _Store], run_id: str
) -> dict[str, Any]:
    """Write curated and rejects under the commit's directories, then its marker, last."""
    commit = commit_id((s.key, s.etag) for s in fresh)
    kept = _read_all([s.staged for s in fresh], stores, LEAD_SCHEMA)
    rejected = _read_all([s.rejects for s in fresh], stores, REJECT_SCHEMA)
    _check_staged(fresh, kept, rejected)
    curated, losers = deduplicate(kept)
    duplicates = pa.array([DUPLICATE] * losers.num_rows, pa.string())
    rejected = pa.concat_tables([rejected, losers.append_column("reason", duplicates)])
    outputs = {
        "curated": f"{settings.root}/curated/commit={commit}/curated.parquet",
        "rejects": f"{settings.root}/rejects/commit={commit}/rejects.parquet",
    }
    _store(outputs["curated"], stores).put(outputs["curated"], _parquet_bytes(curated))
    _store(outputs["rejects"], stores).put(outputs["rejects"], _parquet_bytes(rejected))
    marker = {
        "commit": commit,
        "committed_at": datetime.now(UTC).isoformat(),
        "run_id": run_id,
        "sources": [_source_entry(s, commit, settings) for s in sorted(fresh, key=_version)],
        "counts": _counts(fresh, rejected, curated.num_rows),
        "outputs": outputs,
        "settings": settings.summary(),
    }
    url = f"{settings.root}/commits/{commit}.json"
    _store(url, stores).put(url, json.dumps(marker, indent=2).encode())  # the commit point
    return marker


def _version(source: _Source) -> tuple[str, str]:
    return source.key, source.etag


def _read_all(urls: list[str], stores: dict[str, _Store], schema: pa.Schema) -> pa.Table:
    """The staged tables listed by the map outputs (never a listing of the staging folder)."""
    tables = [_read_parquet(_store(url, stores), url).cast(schema) for url in urls]
    return pa.concat_tables(tables) if tables else schema.empty_table()


def _check_staged(fresh: list[_Source], kept: pa.Table, rejected: pa.Table) -> None:
    # A staged object overwritten since the map step (another run, other settings) would
    # silently change the commit; its row counts would no longer match what the map reported.
    expected = (sum(s.counts["kept"] for s in fresh), sum(s.counts["raw"] for s in fresh))
    found = (kept.num_rows, kept.num_rows + rejected.num_rows)
    if expected != found:
        raise RuntimeError(
            f"staged leads changed since the map step: expected {expected[0]} kept of "
            f"{expected[1]} rows, found {found[0]} of {found[1]}; rerun the pipeline"
        )


def deduplicate(leads: pa.Table) -> tuple[pa.Table, pa.Table]:
    """``(winners, losers)`` by normalised email: the latest ``updatedAt`` wins, then the
    highest ``leadScore``, then the highest ``id`` (a null ranks lowest); deterministic.

    Sorts the whole table in memory (see the memory note in docs/workloads-leads.md).

    >>> leads = pa.table({"email": ["a@x.io", "a@x.io"], "updatedAt": [1, 2],
    ...                   "leadScore": [9, 1], "id": [1, 2]})
    >>> [row["id"] for row in deduplicate(leads)[0].to_pylist()]
    [2]
    """
    keys = [("email", "ascending", "at_end")]
    keys += [(name, "descending", "at_end") for name in ("updatedAt", "leadScore", "id")]
    # A full tie (the same row in two exports) still needs one fixed winner: the provenance.
    provenance = [name for name in ("sourceKey", "sourceRow") if name in leads.column_names]
    keys += [(name, "ascending", "at_end") for name in provenance]
    ordered = leads.take(pc.sort_indices(leads, sort_keys=keys))
    emails = ordered["email"].combine_chunks()
    previous = pa.concat_arrays([pa.nulls(1, emails.type), emails])[: len(emails)]
    first = pc.fill_null(pc.not_equal(emails, previous), True)  # the first row of its email
    return ordered.filter(first), ordered.filter(pc.invert(first))


def _counts(fresh: list[_Source], rejected: pa.Table, curated: int) -> dict[str, Any]:
    raw = sum(s.counts["raw"] for s in fresh)
    rejects = _reason_counts(rejected, REASONS)
    valid = raw - rejects["missing_id"] - rejects["invalid_email"]
    dropped = sum(rejects[rule] for rule in RULES[2:])
    notes = {
        name: sum(s.counts.get(name, 0) for s in fresh)
        for name in ("phone_unnormalised", "country_unknown")
    }
    return {
        "raw": raw,
        "valid": valid,
        "callable": valid - dropped,
        "deduplicated": curated,
        "rejects": rejects,
        **notes,
    }


def _source_entry(source: _Source, commit: str, settings: Settings) -> dict[str, Any]:
    return {
        "key": source.key,
        "etag": source.etag,
        "url": source.url,
        "counts": dict(source.counts),
        "staged": source.staged,
        "rejects": source.rejects,
        "archive": _archive_url(settings, commit, source.key),
    }


def _archive_url(settings: Settings, commit: str, key: str) -> str:
    return f"{settings.archive_root}/commit={commit}/{key}"


def _archive(
    sources: list[_Source],
    commit_of: Mapping[tuple[str, str], str],
    settings: Settings,
    stores: dict[str, _Store],
) -> dict[str, list[str]]:
    """Move every committed source to its commit's archive folder: copy, then delete only
    if the ETag still matches. A source that changed since it was listed stays where it is
    (its new version is curated by the next run)."""
    outcome: dict[str, list[str]] = {"archived": [], "changed": [], "missing": []}
    for source in sources:
        target = _archive_url(settings, commit_of[source.key, source.etag], source.key)
        outcome[_move(source, target, stores)].append(source.key)
    return outcome


def _move(source: _Source, target: str, stores: dict[str, _Store]) -> str:
    """Copy then delete, both conditional on the ETag: ``archived``; ``changed`` when the
    source has a new version (it stays for the next run); ``missing`` when it is gone."""
    url = source.url
    origin, destination = _store(url, stores), _store(target, stores)
    if origin is destination:
        copied = origin.copy(url, target, source.etag)
    else:
        with contextlib.suppress(SourceChanged):
            destination.put(target, origin.get(url, source.etag))
        copied = destination.exists(target)
    if not copied:
        if origin.exists(url):
            return "changed"
        # Gone: archived by an earlier attempt that died after its delete, or removed by hand.
        return "archived" if destination.exists(target) else "missing"
    return "archived" if origin.delete(url, source.etag) else "changed"


def _funnel(
    markers: list[dict[str, Any]], new_commit: dict[str, Any] | None, archive: dict[str, list[str]]
) -> dict[str, Any]:
    """The funnel of the commits this run's sources belong to (summed when more than one)."""
    totals: dict[str, Any] = {"raw": 0, "valid": 0, "callable": 0, "deduplicated": 0}
    rejects = dict.fromkeys(REASONS, 0)
    for marker in markers:
        for name in totals:
            totals[name] += marker["counts"][name]
        for reason, count in marker["counts"]["rejects"].items():
            rejects[reason] += count
    return {
        "commits": sorted(m["commit"] for m in markers),
        "new_commit": new_commit["commit"] if new_commit else None,
        **totals,
        "rejects": rejects,
        "archived": len(archive["archived"]),
        "left_in_place": archive["changed"],  # changed since listed: curated by the next run
        "missing": archive["missing"],  # gone, and not in the archive
        "curated": [m["outputs"]["curated"] for m in markers],
    }
