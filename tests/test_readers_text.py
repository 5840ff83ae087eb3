"""CSV, JSON and JSONL item readers against AWS's documented item shapes, locally and on S3.

Every test that touches storage runs twice through the ``storage`` fixture: on a local folder and
on a bucket of the SeaweedFS S3 server, written with fsspec as a user would.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import fsspec
import pytest
import zstandard

from runner.errors import InputNotFound, ReaderError, SpecError
from runner.readers import csvtext, jsonltext
from runner.readers.base import KeyedValue, ReaderConfig, get_reader
from runner.readers.csv import CsvReader
from runner.readers.csvtext import physical_lines
from runner.readers.json import JsonReader, pointer_tokens
from runner.readers.jsonl import JsonlReader

REPO = Path(__file__).resolve().parents[1]


def put(url: str, data: bytes | str) -> str:
    """Write ``data`` to ``url`` as a user would, compressed when the name says so."""
    raw = data.encode() if isinstance(data, str) else data
    if url.endswith(".gz"):
        raw = gzip.compress(raw)
    elif url.endswith((".zst", ".zstd")):
        raw = zstandard.ZstdCompressor().compress(raw)
    with fsspec.open(url, "wb") as f:
        f.write(raw)
    return url


def read(url: str, input_type: str, **config) -> list:
    """All items of ``url``, through the registry as the engine gets them."""
    return list(get_reader(ReaderConfig(input_type=input_type, **config)).iter_items(url))


def read_until_error(url: str, input_type: str, **config) -> tuple[list, ReaderError]:
    """The items produced before the read failed, and the error."""
    produced = []
    with pytest.raises(ReaderError) as info:
        for item in get_reader(ReaderConfig(input_type=input_type, **config)).iter_items(url):
            produced.append(item)
    return produced, info.value


@pytest.fixture
def base(storage, s3fs_clear_cache):
    """The ``storage`` base URL, with s3fs's instance cache cleared around the test."""
    return storage


# -- registry ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("input_type", "cls"), [("CSV", CsvReader), ("JSON", JsonReader), ("JSONL", JsonlReader)]
)
def test_registry_gives_the_text_readers(input_type, cls):
    assert type(get_reader(ReaderConfig(input_type=input_type))) is cls


# -- CSV --------------------------------------------------------------------------------------


def test_csv_items_are_dicts_of_strings_keyed_by_the_first_row(base):
    url = put(f"{base}/people.csv", "id,name,born,score\n1,Ada,1815,3.50\n2,Alan,1912,007\n")
    assert read(url, "CSV") == [
        {"id": "1", "name": "Ada", "born": "1815", "score": "3.50"},
        {"id": "2", "name": "Alan", "born": "1912", "score": "007"},
    ]


@pytest.mark.parametrize(
    ("name", "char"),
    [("COMMA", ","), ("PIPE", "|"), ("SEMICOLON", ";"), ("SPACE", " "), ("TAB", "\t")],
)
def test_csv_delimiters_split_fields_and_quotes_protect_them(base, name, char):
    text = f'a{char}b{char}c\n1{char}"x{char}y"{char}3\n{char}{char}\n'
    url = put(f"{base}/delimited.csv", text)
    assert read(url, "CSV", csv_delimiter=name) == [
        {"a": "1", "b": f"x{char}y", "c": "3"},
        {"a": "", "b": "", "c": ""},  # a line of delimiters is a row of empty strings
    ]


def test_csv_other_delimiters_are_plain_characters(base):
    url = put(f"{base}/pipes.csv", "a|b,c\n1|2,3\n")
    assert read(url, "CSV") == [{"a|b": "1|2", "c": "3"}]


def test_csv_quotes_hold_line_breaks_and_doubled_quotes(base):
    text = 'id,text\r\n1,"line one\r\nline two"\r\n2,"she said ""hi"", twice"\r\n3,""\r\n'
    url = put(f"{base}/quoted.csv", text)
    assert read(url, "CSV") == [
        {"id": "1", "text": "line one\r\nline two"},
        {"id": "2", "text": 'she said "hi", twice'},
        {"id": "3", "text": ""},
    ]


def test_csv_short_rows_are_padded_and_long_rows_cut(base):
    url = put(f"{base}/ragged.csv", "a,b,c\n1\n1,2\n1,2,3,4,5\n")
    assert read(url, "CSV") == [
        {"a": "1", "b": "", "c": ""},
        {"a": "1", "b": "2", "c": ""},
        {"a": "1", "b": "2", "c": "3"},
    ]


def test_csv_blank_lines_are_skipped_and_old_mac_line_breaks_work(base):
    url = put(f"{base}/blank.csv", "\n\na,b\n\n1,2\r\n\r\n\n3,4\n\n")
    assert read(url, "CSV") == [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}]
    url = put(f"{base}/cr.csv", "a,b\r1,2\r3,4\r")
    assert read(url, "CSV") == [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}]


def test_csv_given_headers_make_the_first_row_data(base):
    url = put(f"{base}/athena.csv", "1,Ada\n2,Alan,extra\n3\n")
    items = read(url, "CSV", csv_header_location="GIVEN", csv_headers=("id", "name"))
    assert items == [
        {"id": "1", "name": "Ada"},
        {"id": "2", "name": "Alan"},
        {"id": "3", "name": ""},
    ]


def test_csv_header_byte_order_mark_is_dropped(base):
    url = put(f"{base}/bom.csv", b"\xef\xbb\xbfid,name\n1,Ada\n")
    assert read(url, "CSV") == [{"id": "1", "name": "Ada"}]


def test_csv_empty_file_has_no_items(base):
    assert read(put(f"{base}/empty.csv", ""), "CSV") == []
    assert read(put(f"{base}/header-only.csv", "a,b\n"), "CSV") == []
    assert read(put(f"{base}/bom-only.csv", b"\xef\xbb\xbf"), "CSV") == []


def test_csv_duplicate_headers_fail_with_aws_message(base):
    url = put(f"{base}/dup.csv", "\na,b,a\n1,2,3\n")
    produced, error = read_until_error(url, "CSV")
    assert produced == []
    assert error.reason == "CSV headers cannot contain duplicates."
    assert error.position == "line 2"
    assert error.url == url and url in str(error)

    url = put(f"{base}/given.csv", "1,2\n")
    produced, error = read_until_error(
        url, "CSV", csv_header_location="GIVEN", csv_headers=("x", "x")
    )
    assert produced == [] and error.reason == "CSV headers cannot contain duplicates."


def test_csv_text_after_a_closing_quote_names_file_and_line(base):
    # lines: 1 header, 2 blank, 3-4 one quoted record, 5 blank, 6 the bad record
    url = put(f"{base}/bad.csv", 'a,b\n\n1,"x\ny"\n\n2,"bad"z\n3,4\n')
    produced, error = read_until_error(url, "CSV")
    assert produced == [{"a": "1", "b": "x\ny"}]  # what came before is not lost
    assert error.position == "line 6"
    assert str(error).startswith(f"{url}, line 6: malformed CSV row:")
    assert "expected after" in error.reason


def test_csv_unclosed_quote_names_the_line_where_the_record_starts(base):
    url = put(f"{base}/open.csv", 'a,b\n1,2\n3,"never closed\n4,5\n6,7\n')
    produced, error = read_until_error(url, "CSV")
    assert produced == [{"a": "1", "b": "2"}]
    assert error.position == "line 3"
    assert "unexpected end of data" in error.reason
    assert "error found at line 5" in error.reason


def test_csv_bad_utf8_names_its_line(base):
    url = put(f"{base}/latin1.csv", "a,b\n1,2\n3,caf\xe9\n".encode("latin-1"))
    produced, error = read_until_error(url, "CSV")
    assert produced == [{"a": "1", "b": "2"}]
    assert error.position == "line 3" and "not UTF-8" in error.reason


def test_csv_header_names_are_data_not_code(tmp_path):
    headers = ["row", "h1", "}", "lambda", 'we"ird', "x" * 50, *[f"c{i}" for i in range(300)]]
    text = io.StringIO()
    csv.writer(text).writerows([headers, list(range(len(headers)))])
    items = read(put(str(tmp_path / "wide.csv"), text.getvalue()), "CSV")
    assert items == [{name: str(i) for i, name in enumerate(headers)}]


def test_csv_line_splitting_matches_textiowrapper_across_block_edges(monkeypatch):
    """The block splitter yields exactly what TextIOWrapper(newline="") would, at any block size."""
    rng = random.Random(7)
    alphabet = ["a", ",", '"', "é", "€", "\n", "\r", "\r\n", "\u2028", "\x0c", " "]
    text = "".join(rng.choice(alphabet) for _ in range(3000))
    data = text.encode()
    expected = list(io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", newline=""))
    for block in (1, 2, 3, 5, 64, 4096):
        monkeypatch.setattr(csvtext, "_BLOCK", block)
        lines = list(physical_lines(io.BytesIO(data), "mem"))
        assert lines == expected, f"block size {block}"


def test_csv_line_without_breaks_is_refused_before_memory_grows(tmp_path, monkeypatch):
    monkeypatch.setattr(csvtext, "_BLOCK", 16)
    monkeypatch.setattr(csvtext, "MAX_LINE", 100)
    url = put(str(tmp_path / "one-line.csv"), "a,b\n" + "x" * 1000)
    produced, error = read_until_error(url, "CSV")
    assert produced == [] and error.position == "line 2" and "longer than" in error.reason


@pytest.mark.parametrize(
    ("field", "value"),
    [("csv_delimiter", "COLON"), ("csv_header_location", "LAST_ROW")],
)
def test_csv_unknown_config_values_are_spec_errors(field, value):
    with pytest.raises(SpecError):
        CsvReader(ReaderConfig(input_type="CSV", **{field: value}))
    with pytest.raises(SpecError, match="CSVHeaders"):
        CsvReader(ReaderConfig(input_type="CSV", csv_header_location="GIVEN"))


# -- JSON -------------------------------------------------------------------------------------

ARRAY = [{"id": 1, "price": 2.5, "tags": ["a"]}, "text", 3, None, True, [1, [2]], {}]


def test_json_array_elements_are_the_items(base):
    url = put(f"{base}/array.json", json.dumps(ARRAY, indent=2))
    items = read(url, "JSON")
    assert items == ARRAY
    assert type(items[0]["price"]) is float and type(items[0]["id"]) is int  # never Decimal


def test_json_object_pairs_are_keyed_items(base):
    url = put(f"{base}/object.json", b'\xef\xbb\xbf {"a": {"x": 1}, "b": [1, 2], "c": "s", "": 0}')
    assert read(url, "JSON") == [
        KeyedValue("a", {"x": 1}),
        KeyedValue("b", [1, 2]),
        KeyedValue("c", "s"),
        KeyedValue("", 0),
    ]


def test_json_items_pointer_selects_a_nested_array(base):
    doc = {"meta": {"items": [0], "n": 2}, "inventory": {"items": ARRAY, "more": [9]}}
    url = put(f"{base}/nested.json", json.dumps(doc))
    assert read(url, "JSON", items_pointer="/inventory/items") == ARRAY


def test_json_items_pointer_selects_a_nested_object(base):
    doc = {"prices": {"apple": 1.5, "pear": {"eu": 2}}, "after": [1]}
    url = put(f"{base}/prices.json", json.dumps(doc))
    assert read(url, "JSON", items_pointer="/prices") == [
        KeyedValue("apple", 1.5),
        KeyedValue("pear", {"eu": 2}),
    ]


@pytest.mark.parametrize(
    ("pointer", "expected"),
    [
        ("/a/1/b", [2, 3]),  # an array index: only that element's "b"
        ("/a~1b/m~0n", ["escaped"]),  # ~1 is "/", ~0 is "~"
        ("/a.b", ["dotted"]),  # a key with a dot is one key
        ("/", [KeyedValue("", ["empty key"])]),  # the key ""
        ("/item", ["named item"]),
    ],
)
def test_json_items_pointer_follows_rfc6901_exactly(tmp_path, pointer, expected):
    doc = {
        "a": [{"b": [1]}, {"b": [2, 3]}],
        "a/b": {"m~n": ["escaped"]},
        "a.b": ["dotted"],
        "": {"": ["empty key"]},
        "item": ["named item"],
    }
    url = put(str(tmp_path / "tricky.json"), json.dumps(doc))
    assert read(url, "JSON", items_pointer=pointer) == expected


@pytest.mark.parametrize(
    ("doc", "found"),
    [("42", "a number"), ('  "text"', "a string"), ("true", "a boolean"), ("null", "null")],
)
def test_json_scalar_file_is_refused(base, doc, found):
    url = put(f"{base}/scalar.json", doc)
    produced, error = read_until_error(url, "JSON")
    assert produced == []
    assert error.reason == f"JSON file must hold an array or an object, found {found}"
    assert url in str(error)


@pytest.mark.parametrize(
    ("pointer", "reason"),
    [
        ("/a/n", "ItemsPointer '/a/n' must point to an array or an object, found a number"),
        ("/a/x", "ItemsPointer '/a/x' does not exist: no key 'x' in the object at /a"),
        ("/list/5", "ItemsPointer '/list/5' does not exist: no element '5' in the array at /list"),
        ("/list/-", "ItemsPointer '/list/-' does not exist: no element '-' in the array at /list"),
        ("/a/n/z", "ItemsPointer '/a/n/z' does not exist: the value at /a/n is a number"),
    ],
)
def test_json_items_pointer_to_nothing_or_a_scalar_is_refused(base, pointer, reason):
    url = put(f"{base}/doc.json", '{"a": {"n": 1}, "list": [[1], [2]]}')
    produced, error = read_until_error(url, "JSON", items_pointer=pointer)
    assert produced == []
    assert error.reason.startswith(reason) and url in str(error)


def test_json_invalid_element_names_the_item_and_keeps_earlier_ones(base):
    url = put(f"{base}/bad.json", '[{"a": 1}, {"a": 2}, {"a": 3,}, {"a": 4}]')
    produced, error = read_until_error(url, "JSON")
    assert produced == [{"a": 1}, {"a": 2}]
    assert error.position == "item 2"
    assert error.reason.startswith("invalid JSON: parse error: invalid object key")
    assert url in str(error)


def test_json_truncated_file_fails_after_the_items_it_holds(base):
    url = put(f"{base}/cut.json", '{"rows": [1, 2, 3], "more": {"x": ')
    produced, error = read_until_error(url, "JSON", items_pointer="/rows")
    assert produced == [1, 2, 3]
    assert "premature EOF" in error.reason and error.position.startswith("bytes ")


@pytest.mark.parametrize(
    ("doc", "produced", "reason"),
    [
        ("", [], "JSON file is empty; it must hold an array or an object"),
        ("   \n", [], "JSON file is empty; it must hold an array or an object"),
        ("[1] [2]", [1], "invalid JSON: parse error: trailing garbage near '[1] [2]'"),
        ("{nope}", [], "invalid JSON: lexical error: invalid string in json text."),
        ("[1, 2", [1, 2], "invalid JSON: parse error: premature EOF"),
    ],
)
def test_json_empty_or_not_json_is_refused(tmp_path, doc, produced, reason):
    url = put(str(tmp_path / "x.json"), doc)
    items, error = read_until_error(url, "JSON")
    assert items == produced and error.reason.startswith(reason)


def test_json_integers_beyond_64_bits_are_refused(tmp_path):
    # A yajl limit that comes with use_float=True; pinned so a change of backend is noticed.
    url = put(str(tmp_path / "big.json"), "[1, 123456789012345678901234567890]")
    produced, error = read_until_error(url, "JSON")
    assert produced == [1] and "integer overflow" in error.reason


def test_json_pointer_syntax_is_checked():
    assert pointer_tokens(None) == () and pointer_tokens("") == ()
    assert pointer_tokens("/~01") == ("~1",)
    for bad in ("inventory/items", "/a~2"):
        with pytest.raises(SpecError):
            JsonReader(ReaderConfig(input_type="JSON", items_pointer=bad))


# -- JSONL ------------------------------------------------------------------------------------


def test_jsonl_each_line_is_an_item(base):
    text = b'\xef\xbb\xbf{"a": 1}\n\n  \r\n[1, 2]\r\n"x"\n3.5\n{"n": null}'
    assert read(put(f"{base}/lines.jsonl", text), "JSONL") == [
        {"a": 1},
        [1, 2],
        "x",
        3.5,
        {"n": None},
    ]


def test_jsonl_invalid_line_names_it_and_keeps_earlier_items(base):
    url = put(f"{base}/bad.jsonl", '{"a": 1}\n\n{"a": 2}\n{"a": }\n{"a": 4}\n')
    produced, error = read_until_error(url, "JSONL")
    assert produced == [{"a": 1}, {"a": 2}]
    assert error.position == "line 4"
    assert error.reason == "invalid JSON: Expecting value at column 7"
    assert str(error) == f"{url}, line 4: invalid JSON: Expecting value at column 7"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("NaN", "invalid JSON: NaN is not valid JSON"),
        ("1 2", "invalid JSON: Extra data at column 3"),
        (b'"caf\xe9"', "not UTF-8 text: invalid continuation byte at byte 5"),
    ],
)
def test_jsonl_non_json_lines_are_refused(tmp_path, line, reason):
    raw = line.encode() if isinstance(line, str) else line
    url = put(str(tmp_path / "x.jsonl"), b"1\n" + raw + b"\n3\n")
    produced, error = read_until_error(url, "JSONL")
    assert produced == [1] and error.position == "line 2" and error.reason == reason


def test_jsonl_lines_split_right_across_block_edges(tmp_path, monkeypatch):
    values = [{"i": i, "s": "é" * (i % 5)} for i in range(200)]
    text = "\n".join(json.dumps(v, ensure_ascii=False) for v in values) + "\n\n"
    url = put(str(tmp_path / "blocks.jsonl"), text)
    for block in (1, 3, 7, 100):
        monkeypatch.setattr(jsonltext, "_BLOCK", block)
        assert read(url, "JSONL") == values, f"block size {block}"


def test_jsonl_line_without_breaks_is_refused_before_memory_grows(tmp_path, monkeypatch):
    monkeypatch.setattr(jsonltext, "_BLOCK", 16)
    monkeypatch.setattr(jsonltext, "MAX_LINE", 100)
    url = put(str(tmp_path / "array.jsonl"), "1\n[" + ", ".join(["1"] * 500) + "]")
    produced, error = read_until_error(url, "JSONL")
    assert produced == [1] and error.position == "line 2" and "longer than" in error.reason


# -- all three: compression and missing inputs ------------------------------------------------

SAMPLES = {
    "CSV": (
        'id,note\n1,"a, b"\n2,"x\ny"\n',
        [{"id": "1", "note": "a, b"}, {"id": "2", "note": "x\ny"}],
    ),
    "JSON": ('[{"id": 1}, {"id": 2}]', [{"id": 1}, {"id": 2}]),
    "JSONL": ('{"id": 1}\n{"id": 2}\n', [{"id": 1}, {"id": 2}]),
}


@pytest.mark.parametrize("suffix", [".gz", ".zst"])
@pytest.mark.parametrize("input_type", sorted(SAMPLES))
def test_compressed_inputs_are_read_transparently(base, input_type, suffix):
    text, expected = SAMPLES[input_type]
    url = put(f"{base}/data.{input_type.lower()}{suffix}", text)
    with fsspec.open(url, "rb") as f:
        assert f.read(2) in (b"\x1f\x8b", b"\x28\xb5")  # really stored compressed
    assert read(url, input_type) == expected


def test_zstd_long_suffix_is_read(tmp_path):
    text, expected = SAMPLES["JSONL"]
    assert read(put(str(tmp_path / "data.jsonl.zstd"), text), "JSONL") == expected


@pytest.mark.parametrize("input_type", sorted(SAMPLES))
def test_missing_file_or_key_is_input_not_found(base, input_type):
    url = f"{base}/no/such/file.{input_type.lower()}"
    with pytest.raises(InputNotFound) as info:
        read(url, input_type)
    assert info.value.url == url and url in str(info.value)
    assert isinstance(info.value, FileNotFoundError)


@pytest.mark.parametrize("input_type", sorted(SAMPLES))
def test_missing_bucket_is_input_not_found(s3_server, s3fs_clear_cache, input_type):
    url = f"s3://no-such-bucket-{input_type.lower()}/data.{input_type.lower()}"
    with pytest.raises(InputNotFound) as info:
        read(url, input_type)
    assert info.value.url == url


# -- memory -----------------------------------------------------------------------------------

_PEAK_RSS = textwrap.dedent(
    """
    import resource, sys
    from runner.readers.base import ReaderConfig, get_reader
    input_type, url, pointer = sys.argv[1:]
    config = ReaderConfig(input_type=input_type, items_pointer=pointer or None)
    reader = get_reader(config)  # imports fsspec, ijson, ... before the baseline
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    count = sum(1 for _ in reader.iter_items(url))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(count, before * 1024, after * 1024)  # ru_maxrss is in KiB on Linux
    """
)


def _big_file(path: Path, input_type: str, pointer: str, size: int) -> int:
    """Write about ``size`` bytes of items to ``path``, one block repeated; returns the count."""
    rng = random.Random(1)
    words = ["alpha", "beta", "gamma", "delta"]
    rows = range(2000)
    if input_type == "CSV":
        head, tail, joint = "id,name,amount,note\n", "", ""
        block = "".join(f'{i},n{i},{rng.random():.4f},"{rng.choice(words)}, {i}"\n' for i in rows)
    else:
        values = [json.dumps({"id": i, "w": rng.choice(words), "v": rng.random()}) for i in rows]
        if input_type == "JSONL":
            head, tail, joint, block = "", "", "", "\n".join(values) + "\n"
        else:
            head, tail = ('{"meta": {"rows": [0]}, "rows": [', "]}") if pointer else ("[", "]")
            joint, block = ", ", ", ".join(values)
    blocks = 0
    with path.open("w", newline="") as f:
        f.write(head)
        while f.tell() < size:
            f.write((joint if blocks else "") + block)
            blocks += 1
        f.write(tail)
    return blocks * len(rows)


@pytest.mark.parametrize(
    ("input_type", "pointer", "size_mb"),
    [("CSV", "", 80), ("JSONL", "", 40), ("JSON", "", 40), ("JSON", "/rows", 40)],
)
def test_memory_stays_flat_whatever_the_file_size(tmp_path, input_type, pointer, size_mb):
    path = tmp_path / f"big.{input_type.lower()}"
    count = _big_file(path, input_type, pointer, size_mb << 20)
    size = path.stat().st_size
    argv = [sys.executable, "-c", _PEAK_RSS, input_type, str(path), pointer]
    out = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=True).stdout
    produced, before, after = map(int, out.split())
    assert produced == count
    growth = after - before
    # Loading the file whole would take at least its size (and several times that as objects).
    assert growth < size / 4, f"peak RSS grew {growth >> 20} MiB reading a {size >> 20} MiB file"
