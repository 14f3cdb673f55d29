"""Whole-file problems of a CSV/Parquet input: a DataError naming the file and the 1-based line,
on the eager reader (prepare, monitor, labels, score_file) and on the streamed scan alike."""

import bz2
import gzip
import io
import lzma
from pathlib import Path

import polars as pl
import pytest

from tasks.core.errors import DataError, SpecError, TableTooLarge
from tasks.core.tables import TableLimits, read_table, scan_table

COLUMNS = ["a", "b", "c"]
GOOD = {
    "plain": b"a,b,c\n1,2,3\n4,5,6\n",
    "crlf, no final newline": b"a,b,c\r\n1,2,3\r\n4,5,6",
    "quoted commas and quotes": b'a,b,c\n1,"x, y",3\n4,"say ""hi""",6\n',
    "a field over two lines": b'a,b,c\n1,"x\ny",3\n4,5,6\n',
    "an empty last field": b"a,b,c\n1,2,\n4,5,6\n",
    "a byte-order mark": b"\xef\xbb\xbfa,b,c\n1,2,3\n4,5,6\n",
}
BAD = {
    "empty": (b"", r"empty file"),
    "blank lines only": (b"\n\n", r"empty file"),
    "header only": (b"a,b,c\n", r"no rows \(a header only\)"),
    "header only, no newline": (b"a,b,c", r"no rows"),
    "a short row": (b"a,b,c\n1,2,3\n4,5\n", r"line 3: 2 fields, the header has 3"),
    "a long row": (b"a,b,c\n1,2,3\n4,5,6,7\n", r"line 3: 4 fields, the header has 3"),
    "a short row after a field over two lines": (b'a,b,c\n1,"x\ny",3\n4,5\n', r"line 4: 2 fields"),
    "a long row after a field over two lines": (b'a,b,c\n1,"x\ny",3\n4,5,6,7\n', r"line 4: 4 fields"),
    "an empty line": (b"a,b,c\n1,2,3\n\n4,5,6\n", r"line 3: 1 field, "),
    "a row cut short of its nullable last field": (b"a,b,c\n1,2,3\n4,5\n7,8,9\n", r"line 3: 2 fields"),
    "a stray byte": (b"a,b,c\n1,2,3\n4,\xff5,6\n", r"line 3: bytes that are not UTF-8 \(b'\\xff' at byte 14\)"),
    "Latin-1 text": ("a,b,c\n1,2,3\n1,2,3\n4,caf\xe9,6\n".encode("latin-1"), r"line 4: bytes that are not UTF-8"),
    "semicolons": (b"a;b;c\n1;2;3\n", r"lacks the columns \['a', 'b', 'c'\].*found \['a;b;c'\].*separated by ';'"),
    "a column missing": (b"a,b\n1,2\n", r"lacks the columns \['c'\] that the config declares; found \['a', 'b'\]"),
}


def _readers(tmp_path: Path, data: bytes):
    path = tmp_path / "table.csv"
    path.write_bytes(data)
    return {
        "file": lambda: read_table(path, str(path), COLUMNS),
        "body": lambda: read_table(data, str(path), COLUMNS),
        "stream": lambda: scan_table(path, str(path), COLUMNS).collect(),
    }


@pytest.mark.parametrize("case", GOOD)
def test_well_formed_files_are_read_as_text(tmp_path, case):
    for how, read in _readers(tmp_path, GOOD[case]).items():
        frame = read()
        assert frame.columns == COLUMNS and frame.height == 2 and set(frame.dtypes) == {pl.String}, how


@pytest.mark.parametrize("case", BAD)
def test_a_broken_file_is_a_data_error_naming_the_file_and_line(tmp_path, case):
    data, message = BAD[case]
    for read in _readers(tmp_path, data).values():
        with pytest.raises(DataError, match=rf"table\.csv.*{message}"):
            read()


def test_missing_columns_are_a_spec_error(tmp_path):
    with pytest.raises(SpecError):
        read_table(b"a,b\n1,2\n", "body", COLUMNS)


def test_a_nullable_last_field_left_empty_is_a_null_not_an_error():
    frame = read_table(b"a,b,c\n1,2,\n", "body", COLUMNS)
    assert frame.rows() == [("1", "2", None)]


def test_parquet_problems_name_the_file(tmp_path):
    empty, broken, no_rows = tmp_path / "e.parquet", tmp_path / "b.parquet", tmp_path / "n.parquet"
    empty.write_bytes(b"")
    broken.write_bytes(b"PAR1 not really")
    pl.DataFrame({c: [] for c in COLUMNS}, schema={c: pl.String for c in COLUMNS}).write_parquet(no_rows)
    for path, message in ((empty, "empty file"), (broken, "not a readable Parquet file"), (no_rows, "no rows")):
        with pytest.raises(DataError, match=rf"{path.name}: {message}"):
            read_table(path, str(path), COLUMNS)
    with pytest.raises(DataError, match="n.parquet: no rows"):
        scan_table(no_rows, str(no_rows), COLUMNS)
    with pytest.raises(DataError, match=r"missing.csv: file not found"):
        read_table(tmp_path / "missing.csv", str(tmp_path / "missing.csv"))


def test_the_streamed_prepare_and_the_batch_reader_use_the_same_checks(tmp_path, orders_spec):
    from tasks.monitor import read_batch
    from tasks.stream import scan_source

    lines = (orders_spec.resolve(orders_spec.source.path)).read_text().splitlines()
    lines[200] = lines[200] + ",extra"
    source = tmp_path / "orders.csv"
    source.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"{source}, line 201: 10 fields, the header has 9"):
        scan_source(orders_spec.with_source(source))
    with pytest.raises(DataError, match=rf"{source}, line 201: 10 fields"):
        read_batch(source)


def test_a_broken_or_missing_snapshot_manifest_is_a_data_error_naming_it(tmp_path):
    from tasks.stores.snapshots import load_manifest

    broken = tmp_path / "manifest.json"
    broken.write_text('{"dataset": "orders",\n not json')
    with pytest.raises(DataError, match=r"(?s)manifest.json is not a valid manifest.*line 2 column 2"):
        load_manifest(broken)  # a DataError: the task's retry rule does not retry it
    with pytest.raises(DataError, match="snapshot manifest not found"):
        load_manifest(tmp_path / "nowhere.json")


# -- one meaning per column, and bounded bodies ---------------------------------------------------
def _duplicated_parquet(path: Path) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table([pa.array(["9"]), pa.array(["1"]), pa.array(["2"]), pa.array(["3"])], names=["b", "a", "b", "c"])
    pq.write_table(table, path)
    return path.read_bytes()


def test_a_column_name_given_twice_is_a_data_error_naming_it(tmp_path):
    csv = tmp_path / "twice.csv"
    csv.write_bytes(b"b,a,b,c\n9,1,2,3\n")
    parquet = tmp_path / "twice.parquet"
    body = _duplicated_parquet(parquet)
    message = r"the column 'b' is in the header 2 times \(columns \[1, 3\]\)"
    for read in (
        lambda: read_table(csv, str(csv), COLUMNS),
        lambda: read_table(csv.read_bytes(), str(csv), COLUMNS),
        lambda: scan_table(csv, str(csv), COLUMNS),
        lambda: read_table(parquet, str(parquet), COLUMNS),
        lambda: read_table(body, str(parquet), COLUMNS, "parquet"),
        lambda: scan_table(parquet, str(parquet), COLUMNS),
    ):
        with pytest.raises(DataError, match=rf"twice\.(csv|parquet): {message}"):
            read()
    empty_names = tmp_path / "empty.csv"
    empty_names.write_bytes(b"a,,c,\n1,2,3,4\n")
    with pytest.raises(DataError, match=r"the column '' is in the header 2 times \(columns \[2, 4\]\)"):
        read_table(empty_names, str(empty_names), COLUMNS)


def test_the_body_format_is_the_callers_word_never_its_magic_bytes(tmp_path):
    parquet = io.BytesIO()
    pl.DataFrame({c: ["1"] for c in COLUMNS}).write_parquet(parquet)
    with pytest.raises(DataError, match=r"body: Parquet bytes \(they start with PAR1\), not CSV text"):
        read_table(parquet.getvalue(), "body", COLUMNS)
    assert read_table(parquet.getvalue(), "body", COLUMNS, "parquet").rows() == [("1", "1", "1")]
    with pytest.raises(DataError, match="body: not a readable Parquet file"):
        read_table(b"a,b,c\n1,2,3\n", "body", COLUMNS, "parquet")


@pytest.mark.parametrize(
    ("kind", "compress"),
    [
        ("gzip", gzip.compress),
        ("bzip2", bz2.compress),
        ("xz", lzma.compress),
        ("zstd", lambda b: b"\x28\xb5\x2f\xfd" + b"not really"),
        ("zip", lambda b: b"PK\x03\x04" + b),
    ],
)
def test_a_compressed_csv_body_is_refused_never_decompressed(kind, compress):
    body = compress(b"a,b,c\n" + b"1,2,3\n" * 1000)
    with pytest.raises(DataError, match=rf"body: {kind}-compressed bytes, not CSV text; send it uncompressed"):
        read_table(body, "body", COLUMNS)


def test_a_compressed_csv_file_on_disk_is_read_when_polars_reads_it(tmp_path):
    """A file the user chose (prepare's `source.path: data.csv.gz`) is read; bzip2 is named, not misread."""
    gz, bz = tmp_path / "t.csv.gz", tmp_path / "t.csv.bz2"
    gz.write_bytes(gzip.compress(b"a,b,c\n1,2,3\n"))
    bz.write_bytes(bz2.compress(b"a,b,c\n1,2,3\n"))
    assert read_table(gz, str(gz), COLUMNS).rows() == [("1", "2", "3")]
    assert scan_table(gz, str(gz), COLUMNS).collect().rows() == [("1", "2", "3")]
    with pytest.raises(DataError, match=r"t\.csv\.bz2: bzip2-compressed bytes"):
        read_table(bz, str(bz), COLUMNS)


def test_limits_are_counted_before_the_data_is_parsed(tmp_path):
    limits = TableLimits(rows=10, bytes=1_000_000)
    csv = b"a,b,c\n" + b"1,2,3\n" * 10
    assert read_table(csv, "body", COLUMNS, limits=limits).height == 10
    with pytest.raises(TableTooLarge, match="body: 11 lines of rows is over the 10-row limit"):
        read_table(csv + b"1,2,3\n", "body", COLUMNS, limits=limits)
    with pytest.raises(TableTooLarge, match="body: 11 lines of rows is over the 10-row limit"):
        read_table(csv + b"1,2,3", "body", COLUMNS, limits=limits)  # the last row with no line break
    assert read_table(csv.rstrip(b"\n"), "body", COLUMNS, limits=limits).height == 10
    many = io.BytesIO()
    pl.DataFrame({c: ["1"] * 11 for c in COLUMNS}).write_parquet(many)
    with pytest.raises(TableTooLarge, match="body: 11 rows is over the 10-row limit"):
        read_table(many.getvalue(), "body", COLUMNS, "parquet", limits=limits)


def _parquet_bomb(dictionary: bool) -> bytes:
    """10 rows of one 1 MB value, zstd pages: a few KB of file, 10 MB of data."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = io.BytesIO()
    table = pa.table({c: ["0" * 2**20] * 10 for c in COLUMNS})
    pq.write_table(table, out, compression="zstd", use_dictionary=dictionary)
    return out.getvalue()


@pytest.mark.parametrize("dictionary", [False, True])
def test_a_parquet_bomb_is_refused_by_its_declared_or_decoded_size(dictionary):
    body = _parquet_bomb(dictionary)
    assert len(body) < 100_000
    limits = TableLimits(rows=100, bytes=5_000_000)
    # plain pages declare their 30 MB uncompressed; a dictionary of one value declares 3 MB, decodes to 30 MB
    message = "bytes decoded" if dictionary else "bytes uncompressed"
    with pytest.raises(TableTooLarge, match=rf"body: \d+ {message} is over the 5000000-byte limit"):
        read_table(body, "body", COLUMNS, "parquet", limits=limits)
    only_a = read_table(body, "body", ["a"], "parquet", columns=["a", "z"], limits=TableLimits(100, 15_000_000))
    assert only_a.columns == ["a"]  # the columns asked for (those the file has), counted alone
