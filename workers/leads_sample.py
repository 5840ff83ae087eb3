"""Seeded marketing lead exports with known dirt: ``shardmap sample leads DEST_URL``.

Writes six monthly Parquet exports (``2024-01/leads-export-2024-01.parquet`` ...; fewer below
120 leads) of a Marketo-like schema, each file with its own encodings (booleans as bools,
``"true"/"False"``, ``1/0``, ``"yes"/"no"`` or a mix; ids as ints or strings; times as timestamps
or ISO strings), and plants the dirt the curation must handle: missing ids, bad email syntax,
bounced, unsubscribed and do-not-call leads, blacklisted domains, names in the wrong case, phones
in national and international formats, countries as names, alpha-3 or alpha-2 codes, and
duplicates across files (the same email cased and spaced differently) whose winner is fixed by
construction.

The summary's ``truth`` holds the exact count per rule under the default settings
(pipelines/leads.yaml), computed here from what was planted, never by running the worker, so a
test that compares the two checks the worker. Same seed, same bytes.
"""

from __future__ import annotations

import io
import random
import unicodedata
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from functools import cache
from typing import Any

import fsspec
import phonenumbers
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["BLACKLIST", "DEFAULT_COUNT", "FILES", "leads_sample"]

DEFAULT_COUNT = 6000
FILES = 6
#: The default BatchInput.Blacklist of pipelines/leads.yaml: domains (parents included) and emails.
BLACKLIST = ("mailinator.com", "spamtrap.io", "competitor@rivalcorp.com")

# Rates of planted dirt (per lead that has no duplicate; duplicates stay clean so that every
# copy reaches the dedup step and the winner is the one planted).
_RATES = {
    "missing_id": 0.015,
    "bad_email": 0.02,
    "blacklisted": 0.015,
    "email_invalid": 0.02,
    "unsubscribed": 0.04,
    "do_not_call": 0.05,
    "do_not_call_null": 0.03,
    "flag_null": 0.01,
    "unknown_country": 0.03,
    "bad_phone": 0.03,
}
_DUPLICATE_SHARE = 0.08  # of all rows, copies of another lead

_FIRST = (
    "James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda", "David",
    "Elizabeth", "Anne-Marie", "Jean-Luc", "Sofia", "Lukas", "Emma", "Noah", "Olivia", "Liam",
    "Chloé", "Zoë", "Émile", "Søren", "Siobhán", "Mateo", "Aoife", "Priya", "Kenji", "Fatima",
)  # fmt: skip
_LAST = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Müller",
    "Schmidt", "Dubois", "Martin", "O'Brien", "O'Connor", "Nguyen", "Kowalski", "Rossi", "Silva",
    "Jensen", "Murphy", "Walsh", "Fernández", "Van Dijk", "Patel", "Tanaka",
)  # fmt: skip
_MIXED_CASE_LAST = ("McDonald", "MacLeod", "DeAngelo", "LeBlanc")  # kept as written: never recased
_DOMAINS = (
    "acme.com", "globex.com", "initech.io", "umbrella-corp.com", "hooli.com", "piedpiper.io",
    "stark-industries.com", "wayne-enterprises.com", "gmail.com", "outlook.com", "yahoo.co.uk",
    "web.de", "orange.fr", "soylent.co", "wonka-industries.com",
)  # fmt: skip
_BLACKLISTED_DOMAINS = ("mailinator.com", "eu.spamtrap.io", "spamtrap.io")
_COMPANIES = ("Acme", "Globex", "Initech", "Umbrella", "Hooli", "Pied Piper", "Stark", "Wonka")
_TITLES = ("CTO", "VP Marketing", "Data Engineer", "Head of Sales", "Analyst", None)
_SOURCES = ("Webinar", "Trade Show", "Website", "Paid Search", "Partner")
_INDUSTRIES = ("Software", "Retail", "Finance", "Healthcare", "Manufacturing")
# ISO alpha-2 -> the spellings exports use for it (the worker must map each back).
_COUNTRIES = {
    "US": ("US", "USA", "United States", "united states of america", "U.S.A."),
    "GB": ("GB", "GBR", "United Kingdom", "UK", "great britain"),
    "DE": ("DE", "DEU", "Germany", "Deutschland", "de"),
    "FR": ("FR", "FRA", "France", " france "),
    "CA": ("CA", "CAN", "Canada"),
    "AU": ("AU", "AUS", "Australia"),
    "NL": ("NL", "NLD", "Netherlands", "The Netherlands"),
    "ES": ("ES", "ESP", "Spain", "España"),
    "IE": ("IE", "IRL", "Ireland"),
    "BR": ("BR", "BRA", "Brazil", "Brasil"),
}
_UNKNOWN_COUNTRIES = ("Atlantis", "N/A", "Unknown", "--")
_BAD_PHONES = ("n/a", "000", "12345", "call me", "+1 (555)")
# Every bad form fails email-validator's syntax checks (no DNS involved).
_BAD_EMAILS = (
    "{local}", "{local}@", "@{domain}", "{first} {last}@{domain}", "{local}..x@{domain}",
    "{local}@{stem}", "{local}@@{domain}", ".{local}@{domain}", "{local}.@{domain}",
    "{local}@{domain},", "", None,
)  # fmt: skip
# One encoding per export file: real exports disagree file by file.
_ENCODINGS = (
    {"flags": "bool", "id": "int", "time": "timestamp", "score": "int"},
    {"flags": "true_false", "id": "string", "time": "iso", "score": "string"},
    {"flags": "one_zero", "id": "int", "time": "timestamp", "score": "float"},
    {"flags": "yes_no", "id": "int", "time": "iso", "score": "int", "capitalised": True},
    {"flags": "bool", "id": "string", "time": "timestamp", "score": "int"},
    {"flags": "mixed", "id": "int", "time": "iso", "score": "float"},
)
_EPOCH = datetime(2023, 1, 1, tzinfo=UTC)
_CET = timezone(timedelta(hours=1))


@dataclass
class _Lead:
    """One planted row: the canonical values, and what the curation must make of them."""

    id: int | None
    first: str
    last: str
    domain: str
    local: str
    email: str | None  # as written to the export (noise included)
    bad_email: bool
    phone: phonenumbers.PhoneNumber | None
    phone_text: str | None
    country: str | None  # ISO alpha-2, None when unknown or missing
    country_text: str | None
    do_not_call: bool | None
    unsubscribed: bool | None
    email_invalid: bool | None
    score: int | None
    created: datetime
    updated: datetime
    file: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str | None:
        """The dedup key as planted: the address lower-cased and trimmed."""
        return None if self.email is None else self.email.strip().lower()


_KINDS = ("updatedAt", "leadScore", "id")  # what decides a duplicate group's winner


@dataclass
class _Group:
    """A lead and its copies in other exports; ``winner`` is the one the tie-break keeps."""

    kind: str
    members: list[_Lead]  # the original first
    winner: _Lead


def leads_sample(dest_url: str, *, count: int | None = None, seed: int = 7) -> dict[str, Any]:
    """Write the lead exports under ``dest_url``; the summary with the ground truth.

    >>> summary = leads_sample("leads-data")          # doctest: +SKIP
    >>> summary["objects"], summary["truth"]["raw"]   # doctest: +SKIP
    (6, 6000)
    """
    count = count or DEFAULT_COUNT
    rng = random.Random(seed)
    files = max(1, min(FILES, count // 20))
    leads, groups = _plan(rng, count, files)
    names = [_file_name(number) for number in range(files)]
    rows = _write(dest_url, leads, names, rng)
    truth, winners = _truth(leads, groups)
    return {
        "objects": files,
        "count": count,
        "seed": seed,
        "files": [{"key": name, "rows": rows[n], **_ENCODINGS[n]} for n, name in enumerate(names)],
        "blacklist": list(BLACKLIST),
        "truth": truth,
        "winners": {kind: [_winner(lead, names) for lead in found[:5]] for kind, found in winners},
        "examples": _examples(leads, groups),
    }


def _file_name(number: int) -> str:
    month = f"2024-{number + 1:02d}"
    return f"{month}/leads-export-{month}.parquet"


# -- planting ---------------------------------------------------------------------------------


def _plan(rng: random.Random, count: int, files: int) -> tuple[list[_Lead], list[_Group]]:
    """``count`` rows: unique leads, some with dirt, plus duplicate groups."""
    copies = round(count * _DUPLICATE_SHARE)
    originals = [_lead(rng, n, files) for n in range(count - copies)]
    groups: list[_Group] = []
    candidates = iter(rng.sample(originals, len(originals)))
    while copies > 0:
        size = 2 if copies >= 2 and rng.random() < 0.25 else 1
        kind = _KINDS[len(groups) % len(_KINDS)]
        groups.append(_group(rng, next(candidates), size, kind, files))
        copies -= size
    grouped = {id(lead) for group in groups for lead in group.members}
    singles = [lead for lead in originals if id(lead) not in grouped]
    for lead in singles:
        _dirty(rng, lead)
    for lead in rng.sample(singles, min(2, len(singles))):  # the exact blacklisted address
        lead.local, lead.domain, lead.bad_email = "competitor", "rivalcorp.com", False
        lead.email = _noisy_email(rng, "Competitor@RivalCorp.com")
    return originals + [lead for group in groups for lead in group.members[1:]], groups


def _lead(rng: random.Random, number: int, files: int) -> _Lead:
    first = rng.choice(_FIRST)
    last = rng.choice(_MIXED_CASE_LAST) if rng.random() < 0.05 else rng.choice(_LAST)
    domain = rng.choice(_DOMAINS)
    local = f"{_ascii(first)}.{_ascii(last)}{number}"
    country = rng.choice(list(_COUNTRIES))
    phone = _phone(rng, country)
    created = _EPOCH + timedelta(seconds=rng.randrange(300 * 86400))
    return _Lead(
        id=100_000 + number,
        first=first,
        last=last,
        domain=domain,
        local=local,
        email=_noisy_email(rng, f"{local}@{domain}"),
        bad_email=False,
        phone=phone,
        phone_text=_phone_text(rng, phone),
        country=country,
        country_text=rng.choice(_COUNTRIES[country]),
        do_not_call=False,
        unsubscribed=False,
        email_invalid=False,
        score=rng.randrange(0, 100),
        created=created,
        updated=created + timedelta(seconds=rng.randrange(60 * 86400)),
        file=rng.randrange(files),
        extra={
            "company": rng.choice(_COMPANIES),
            "title": rng.choice(_TITLES),
            "city": rng.choice(("Boston", "London", "Berlin", "Paris", "Dublin", None)),
            "state": rng.choice(("MA", "CA", "NY", None)),
            "postalCode": f"{rng.randrange(100000):05d}",
            "leadSource": rng.choice(_SOURCES),
            "industry": rng.choice(_INDUSTRIES),
            "leadStatus": rng.choice(("New", "MQL", "SQL")),  # not in the CRM schema: dropped
        },
    )


def _ascii(name: str) -> str:
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return plain.lower().replace("'", "").replace(" ", "")


def _noisy_email(rng: random.Random, email: str) -> str:
    """Case and surrounding whitespace noise on one lead in five (every copy gets some)."""
    if rng.random() < 0.8:
        return email
    return _vary_email(rng, email)


def _vary_email(rng: random.Random, email: str) -> str:
    local, _, domain = email.partition("@")
    styles = (email.upper(), local.capitalize() + "@" + domain.upper(), email.title(), email)
    pads = ("", " ", "  ", "\t", " \t")
    return rng.choice(pads) + rng.choice(styles) + rng.choice(pads)


def _phone(rng: random.Random, region: str) -> phonenumbers.PhoneNumber:
    """A random number that libphonenumber deems valid for ``region`` (mobile range)."""
    example = _example_mobile(region)
    digits = str(example.national_number)
    while True:
        national = digits[:2] + "".join(rng.choice("0123456789") for _ in digits[2:])
        number = phonenumbers.PhoneNumber(
            country_code=example.country_code, national_number=int(national)
        )
        if phonenumbers.is_valid_number(number):
            return number


@cache
def _example_mobile(region: str) -> phonenumbers.PhoneNumber:
    return phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)


_PHONE_FORMATS = ("national", "international", "e164", "digits", "rfc3966")


def _phone_text(rng: random.Random, number: phonenumbers.PhoneNumber) -> str:
    return _format_phone(number, rng.choice(_PHONE_FORMATS))


def _format_phone(number: phonenumbers.PhoneNumber, style: str) -> str:
    formats = phonenumbers.PhoneNumberFormat
    if style == "digits":  # what a form field keeps of a national number: digits only
        national = phonenumbers.format_number(number, formats.NATIONAL)
        return "".join(ch for ch in national if ch.isdigit())
    chosen = {
        "national": formats.NATIONAL,
        "international": formats.INTERNATIONAL,
        "e164": formats.E164,
        "rfc3966": formats.RFC3966,
    }[style]
    return phonenumbers.format_number(number, chosen)


def _phone_style(text: str) -> str:
    if text.startswith(("+", "tel:")):
        return "international"
    return "national"


def _group(rng: random.Random, original: _Lead, copies: int, kind: str, files: int) -> _Group:
    """``original`` plus copies in other files (mostly), decided by one tie-break ``kind``:
    the latest updatedAt (the same Marketo lead in two monthly exports), the highest
    leadScore at equal updatedAt, or the highest id at equal updatedAt and leadScore."""
    members = [original] + [
        replace(
            original,
            email=_vary_email(rng, f"{original.local}@{original.domain}"),
            extra=dict(original.extra),
        )
        for _ in range(copies)
    ]
    others = [n for n in range(files) if n != original.file] or [original.file]
    for member in members[1:]:
        same_file = rng.random() < 0.1
        member.file = original.file if same_file else rng.choice(others)
        member.phone_text = _phone_text(rng, member.phone) if member.phone else None
        member.country_text = rng.choice(_COUNTRIES[original.country or "US"])
    updated = sorted(rng.sample(range(1, 90 * 86400), len(members)))
    scores = sorted(rng.sample(range(100), len(members)))
    ids = sorted(rng.sample(range(900_000, 999_999), len(members)))
    ranked = rng.sample(members, len(members))  # which member wins is random; ranks fix it
    for rank, member in enumerate(ranked):  # rank 0 is the winner
        low = len(members) - 1 - rank
        if kind == "updatedAt":
            member.updated = original.created + timedelta(seconds=updated[low])
            member.score = scores[rank]  # the winner has the lowest score: updatedAt decides
        elif kind == "leadScore":
            member.updated = original.updated
            member.score = scores[low]
            member.id = ids[rank]  # the winner has the lowest id: leadScore decides
        else:
            member.updated = original.updated
            member.score = original.score
            member.id = ids[low]
    if kind == "leadScore" and len(members) == 3:
        ranked[-1].score = None  # a null score ranks below every score
    return _Group(kind, members, winner=ranked[0])


def _dirty(rng: random.Random, lead: _Lead) -> None:
    """Plant dirt on a lead that has no duplicate. Several kinds may land on one lead; the
    truth counts each rejected lead once, under the first rule it fails."""
    roll = rng.random
    if roll() < _RATES["missing_id"]:
        lead.id = None
    kind = roll()
    if kind < _RATES["bad_email"]:
        form = rng.choice(_BAD_EMAILS)
        lead.bad_email = True
        lead.email = None if form is None else form.format(
            local=lead.local, domain=lead.domain, stem=lead.domain.split(".")[0],
            first=lead.first, last=lead.last,
        )  # fmt: skip
    elif kind < _RATES["bad_email"] + _RATES["blacklisted"]:
        lead.domain = rng.choice(_BLACKLISTED_DOMAINS)
        lead.email = _noisy_email(rng, f"{lead.local}@{lead.domain}")
    lead.email_invalid = _flag(rng, "email_invalid")
    lead.unsubscribed = _flag(rng, "unsubscribed")
    dnc = roll()
    if dnc < _RATES["do_not_call"]:
        lead.do_not_call = True
    elif dnc < _RATES["do_not_call"] + _RATES["do_not_call_null"]:
        lead.do_not_call = None
    if roll() < _RATES["unknown_country"]:
        lead.country, lead.country_text = None, rng.choice((*_UNKNOWN_COUNTRIES, None))
    if roll() < _RATES["bad_phone"]:
        lead.phone, lead.phone_text = None, rng.choice((*_BAD_PHONES, None))
    if roll() < 0.3:  # names typed in the wrong case; mixed-case names only get spaces
        lead.extra["first_text"], lead.extra["last_text"] = _noisy_name(rng, lead)


def _flag(rng: random.Random, rate: str) -> bool | None:
    roll = rng.random()
    if roll < _RATES[rate]:
        return True
    return None if roll < _RATES[rate] + _RATES["flag_null"] else False


def _noisy_name(rng: random.Random, lead: _Lead) -> tuple[str, str]:
    def noisy(name: str, recase: bool) -> str:
        style = rng.choice(("upper", "lower", "pad")) if recase else "pad"
        if style == "upper":
            return name.upper()
        if style == "lower":
            return name.lower()
        return f"  {name} "

    return noisy(lead.first, True), noisy(lead.last, lead.last not in _MIXED_CASE_LAST)


# -- ground truth -----------------------------------------------------------------------------


def _first_rule(lead: _Lead) -> str | None:
    """The first rule of workers.leads.RULES this lead fails under the default settings."""
    key = lead.key
    if lead.id is None:
        return "missing_id"
    if lead.bad_email or not key:
        return "invalid_email"
    if lead.email_invalid:
        return "email_invalid_flag"
    domain = key.rpartition("@")[2]
    if key in BLACKLIST or any(domain == d or domain.endswith("." + d) for d in BLACKLIST):
        return "blacklisted"
    if lead.unsubscribed:
        return "unsubscribed"
    if lead.do_not_call:  # null is kept by default (DoNotCallNull: keep)
        return "do_not_call"
    return None


def _truth(
    leads: list[_Lead], groups: list[_Group]
) -> tuple[dict[str, int], list[tuple[str, list[_Lead]]]]:
    rules = (
        "missing_id", "invalid_email", "email_invalid_flag", "blacklisted", "unsubscribed",
        "do_not_call",
    )  # fmt: skip
    truth = dict.fromkeys(("raw", *rules, "duplicate", "curated"), 0)
    truth["raw"] = len(leads)
    survivors = []
    for lead in leads:
        rule = _first_rule(lead)
        if rule is None:
            survivors.append(lead)
        else:
            truth[rule] += 1
    winners = _winners(survivors)
    truth["duplicate"] = len(survivors) - len(winners)
    truth["curated"] = len(winners)
    truth["valid"] = truth["raw"] - truth["missing_id"] - truth["invalid_email"]
    dropped = sum(truth[rule] for rule in rules[2:])
    truth["callable"] = truth["valid"] - dropped
    truth["deduplicated"] = truth["curated"]
    truth["duplicate_groups"] = len(groups)
    truth["do_not_call_null"] = sum(1 for lead in survivors if lead.do_not_call is None)
    truth["curated_phones"] = sum(1 for lead in winners.values() if _expected_e164(lead))
    truth["curated_countries"] = sum(1 for lead in winners.values() if lead.country)
    by_kind = [(kind, [g.winner for g in groups if g.kind == kind]) for kind in _KINDS]
    return truth, by_kind


def _winners(survivors: list[_Lead]) -> dict[str, _Lead]:
    """Per dedup key, the winner by the tie-break order (null ranks lowest)."""
    best: dict[str, _Lead] = {}
    for lead in survivors:
        assert lead.key is not None
        current = best.get(lead.key)
        if current is None or _rank(lead) > _rank(current):
            best[lead.key] = lead
    return best


def _rank(lead: _Lead) -> tuple[datetime, float, int]:
    score = float("-inf") if lead.score is None else lead.score
    return lead.updated, score, lead.id or 0


def _expected_e164(lead: _Lead) -> str | None:
    if lead.phone is None or lead.phone_text is None:
        return None
    if lead.country is None and _phone_style(lead.phone_text) == "national":
        return None  # a national number with no known country has no region to parse with
    return phonenumbers.format_number(lead.phone, phonenumbers.PhoneNumberFormat.E164)


def _winner(lead: _Lead, names: list[str]) -> dict[str, Any]:
    return {
        "email": lead.key,
        "id": lead.id,
        "leadScore": lead.score,
        "updatedAt": lead.updated.isoformat(),
        "file": names[lead.file],
    }


def _examples(leads: list[_Lead], groups: list[_Group]) -> list[dict[str, Any]]:
    """A few clean single leads with what the curated row must hold (spot checks)."""
    grouped = {id(lead) for group in groups for lead in group.members}
    clean = [lead for lead in leads if id(lead) not in grouped and _first_rule(lead) is None]
    picked = [lead for lead in clean if "first_text" in lead.extra][:4]
    picked += [lead for lead in clean if lead.country is None][:2]
    picked += [lead for lead in clean if lead.phone_text and lead.phone_text.startswith("tel:")][:2]
    return [
        {
            "email": lead.key,
            "given": {
                "email": lead.email,
                "phone": lead.phone_text,
                "country": lead.country_text,
                "firstName": lead.extra.get("first_text", lead.first),
                "lastName": lead.extra.get("last_text", lead.last),
            },
            "phone": _expected_e164(lead),
            "country": lead.country,
            "firstName": lead.first,
            "lastName": lead.last,
        }
        for lead in picked
    ]


# -- writing ----------------------------------------------------------------------------------


def _write(dest_url: str, leads: list[_Lead], names: list[str], rng: random.Random) -> list[int]:
    fs, root = fsspec.core.url_to_fs(dest_url)
    rows = []
    for number, name in enumerate(names):
        mine = [lead for lead in leads if lead.file == number]
        rng.shuffle(mine)  # copies never sit next to their original
        table = _table(mine, _ENCODINGS[number], rng)
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        path = f"{root.rstrip('/')}/{name}"
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        with fs.open(path, "wb") as stream:
            stream.write(buffer.getvalue())
        rows.append(len(mine))
    return rows


def _table(leads: list[_Lead], encoding: dict[str, Any], rng: random.Random) -> pa.Table:
    columns: dict[str, pa.Array] = {
        "id": _ids(leads, encoding["id"], rng),
        "email": pa.array([lead.email for lead in leads], pa.string()),
        "firstName": pa.array([lead.extra.get("first_text", lead.first) for lead in leads]),
        "lastName": pa.array([lead.extra.get("last_text", lead.last) for lead in leads]),
        "phone": pa.array([lead.phone_text for lead in leads], pa.string()),
        "company": pa.array([lead.extra["company"] for lead in leads]),
        "country": pa.array([lead.country_text for lead in leads], pa.string()),
    }
    for name, attribute in (
        ("doNotCall", "do_not_call"),
        ("unsubscribed", "unsubscribed"),
        ("emailInvalid", "email_invalid"),
    ):
        values = [getattr(lead, attribute) for lead in leads]
        columns[name] = _flags(values, encoding["flags"], rng)
    columns["leadScore"] = _scores([lead.score for lead in leads], encoding["score"])
    columns["createdAt"] = _times([lead.created for lead in leads], encoding["time"], rng)
    columns["updatedAt"] = _times([lead.updated for lead in leads], encoding["time"], rng)
    for name in ("title", "city", "state", "postalCode", "leadSource", "industry", "leadStatus"):
        columns[name] = pa.array([lead.extra[name] for lead in leads], pa.string())
    if encoding.get("capitalised"):  # an export tool that capitalises its column names
        columns = {name[0].upper() + name[1:]: values for name, values in columns.items()}
    return pa.table(columns)


def _ids(leads: list[_Lead], style: str, rng: random.Random) -> pa.Array:
    if style == "int":
        return pa.array([lead.id for lead in leads], pa.int64())
    texts = []
    for lead in leads:
        if lead.id is None:
            texts.append(rng.choice(("", " ", None)))
        else:
            texts.append(rng.choice((str(lead.id), f" {lead.id}", f"{lead.id:08d}")))
    return pa.array(texts, pa.string())


_TRUE_TEXT = {"true_false": ("true", "True", "TRUE"), "yes_no": ("yes", "Yes", "1")}
_FALSE_TEXT = {"true_false": ("false", "False", "FALSE"), "yes_no": ("no", "No", "0")}
_MIXED = {True: ("true", "True", "yes", "1"), False: ("false", "False", "no", "0")}


def _flags(values: list[bool | None], style: str, rng: random.Random) -> pa.Array:
    if style == "bool":
        return pa.array(values, pa.bool_())
    if style == "one_zero":
        return pa.array([None if v is None else int(v) for v in values], pa.int64())
    if style == "mixed":
        return pa.array([None if v is None else rng.choice(_MIXED[v]) for v in values])
    texts = [
        None if v is None else rng.choice(_TRUE_TEXT[style] if v else _FALSE_TEXT[style])
        for v in values
    ]
    return pa.array(texts, pa.string())


def _scores(values: list[int | None], style: str) -> pa.Array:
    if style == "int":
        return pa.array(values, pa.int64())
    if style == "float":
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    return pa.array([None if v is None else str(v) for v in values], pa.string())


def _times(values: list[datetime], style: str, rng: random.Random) -> pa.Array:
    if style == "timestamp":
        return pa.array(values, pa.timestamp("ms", tz="UTC"))
    texts = []
    for moment in values:
        shape = rng.randrange(4)
        if shape == 0:
            texts.append(moment.strftime("%Y-%m-%dT%H:%M:%SZ"))
        elif shape == 1:
            texts.append(moment.isoformat())  # +00:00
        elif shape == 2:  # naive: read as UTC
            texts.append(moment.strftime("%Y-%m-%d %H:%M:%S"))
        else:  # the same instant written with a local offset
            texts.append(moment.astimezone(_CET).isoformat())
    return pa.array(texts, pa.string())
