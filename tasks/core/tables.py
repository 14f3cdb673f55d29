"""Reading a CSV or Parquet table (a file or a request body) with its whole-file problems as
`DataError`s naming the file and the 1-based line: an empty file, a header and no rows, a row
with more or fewer fields than the header, bytes that are not UTF-8, declared columns missing
(a `;` file read as `,` is one column), a column name given twice. Row-level problems (bad values)
are not checked here: they are quarantined with reasons by the schema.

A body's format is the caller's word (the service's `Content-Type`), never its magic bytes, and a
CSV body of compressed bytes is refused, never decompressed. With `TableLimits` (request bodies),
rows and decompressed bytes are counted before the data is parsed: a CSV's lines, a Parquet
file's declared row count and uncompressed column sizes (then the decoded size, before any use).
A file on disk the user chose may be gzip- or zstd-compressed CSV (`data.csv.gz`): Polars reads it.

CSV values are read as text, so bad values reach validation. The field count of every line is
checked on the bytes read, in one Polars pass over the lines (about half a read's time); only a
file with a quoted field spanning lines falls back to Python's `csv` module for the count.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.core.errors import DataError, SpecError, TableTooLarge

Source = Path | bytes
_SEP, _QUOTE = ",", '"'
_BLOCK = 1 << 22
_OTHER_SEPARATORS = (";", "\t", "|")
# the first bytes of compressed data; Polars reads the first two itself from a file on disk
_COMPRESSED = {
    b"\x1f\x8b": "gzip",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"PK\x03\x04": "zip",
}
_POLARS_DECOMPRESSES = frozenset({"gzip", "zstd"})


class TableLimits(NamedTuple):
    """At most `rows` rows and `bytes` bytes of decompressed data (a request body's limits)."""

    rows: int
    bytes: int


def table_format(source: Source, fmt: str | None = None) -> str:
    """`csv` or `parquet`: as given, else a file's suffix; a body without a format is CSV (its magic
    bytes never decide)."""
    if fmt:
        return fmt
    if isinstance(source, bytes):
        return "csv"
    return "parquet" if source.suffix.lower() in {".parquet", ".pq"} else "csv"


def read_table(
    source: Source,
    name: str,
    required: Sequence[str] = (),
    fmt: str | None = None,
    *,
    columns: Sequence[str] | None = None,
    limits: TableLimits | None = None,
) -> pl.DataFrame:
    """The whole table (CSV values as text), or a `DataError` naming `name` and the line;
    `columns`: only those of them the file has are read; over `limits`: `TableTooLarge`."""
    read = _read_parquet if table_format(source, fmt) == "parquet" else _read_csv
    return require_rows(read(source, name, required, columns, limits), name)


def scan_table(path: Path, name: str, required: Sequence[str] = (), fmt: str | None = None) -> pl.LazyFrame:
    """A lazy scan for tables larger than memory: the file's whole-file checks first, in
    streaming passes that hold no more than a block of it."""
    _exists(path, name)
    if table_format(path, fmt) == "parquet":
        columns = _parquet_footer(path, name).schema.to_arrow_schema().names
        _no_duplicates(columns, name)
        try:
            scan = pl.scan_parquet(path)
            scan.collect_schema()
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise DataError(f"{name}: not a readable Parquet file: {exc}") from exc
    else:
        _not_empty(path, name)
        _not_compressed(path, name)
        scan = pl.scan_csv(path, infer_schema=False)
        try:
            columns = _csv_header(path, name)
            _check_lines(path, name, len(columns))
        except pl.exceptions.PolarsError as exc:
            _raise_undecodable(path, name)
            raise DataError(f"{name}: not a readable CSV file: {exc}") from exc
    require_columns(columns, required, name)
    if scan.select(pl.len()).collect().item() == 0:
        raise DataError(f"{name}: no rows (a header only)")
    return scan


def require_columns(found: Sequence[str], required: Sequence[str], name: str) -> None:
    """The columns the config declares must all be there: say which are missing and what was found."""
    missing = [c for c in required if c not in found]
    if not missing:
        return
    hint = ""
    if len(found) == 1:
        other = next((s for s in _OTHER_SEPARATORS if s in found[0]), None)
        if other:
            hint = f" — one column, its name holding {other!r}: is the file separated by {other!r}? (CSV here: commas)"
    raise SpecError(f"{name}: lacks the columns {missing} that the config declares; found {list(found)}{hint}")


def require_rows(frame: pl.DataFrame, name: str) -> pl.DataFrame:
    if frame.height == 0:
        raise DataError(f"{name}: no rows" + (" (a header only)" if frame.width else ""))
    return frame


def _no_duplicates(columns: Sequence[str], name: str) -> None:
    """Every column name once: a reader would otherwise keep one of them silently (Polars renames
    the later ones in a CSV)."""
    twice = [c for c, n in Counter(columns).items() if n > 1]
    if twice:
        where = [i + 1 for i, c in enumerate(columns) if c == twice[0]]
        raise DataError(
            f"{name}: the column {twice[0]!r} is in the header {len(where)} times (columns {where}); "
            "each column name must be given once"
        )


def _selected(found: Sequence[str], columns: Sequence[str] | None) -> list[str] | None:
    return None if columns is None else [c for c in found if c in set(columns)]


# -- CSV ---------------------------------------------------------------------------------------
def _read_csv(
    source: Source, name: str, required: Sequence[str], columns: Sequence[str] | None, limits: TableLimits | None
) -> pl.DataFrame:
    if isinstance(source, Path):
        _exists(source, name)
    _not_empty(source, name)
    _not_compressed(source, name)
    try:
        header = _csv_header(source, name)
        if limits is not None:
            _within_lines(source, name, limits)
        frame = pl.read_csv(source, infer_schema=False, columns=_selected(header, columns))
        _check_lines(source, name, len(header))
    except pl.exceptions.PolarsError as exc:  # too many fields, bytes that are not UTF-8, ...
        _check_lines_exactly(source, name, None)
        _raise_undecodable(source, name)
        raise DataError(f"{name}: not a readable CSV file: {exc}") from exc
    require_columns(header, required, name)
    return frame


def _csv_header(source: Source, name: str) -> list[str]:
    """The header's names as written (an empty name is ""), none of them twice."""
    first = pl.read_csv(source, has_header=False, n_rows=1, infer_schema=False, truncate_ragged_lines=True)
    header = ["" if v is None else v for v in first.row(0)] if first.height else []
    _no_duplicates(header, name)
    return header


def _not_compressed(source: Source, name: str) -> None:
    """A CSV body of compressed bytes is refused (never decompressed); so is a file compressed in a
    way Polars does not read, and Parquet bytes declared as CSV."""
    head = source[:8] if isinstance(source, bytes) else _head(source)[:8]
    if head.startswith(b"PAR1"):
        raise DataError(f"{name}: Parquet bytes (they start with PAR1), not CSV text; declare it as Parquet")
    kind = next((k for magic, k in _COMPRESSED.items() if head.startswith(magic)), None)
    if kind and (isinstance(source, bytes) or kind not in _POLARS_DECOMPRESSES):
        raise DataError(
            f"{name}: {kind}-compressed bytes, not CSV text; send it uncompressed "
            "(or as Parquet, which compresses itself)"
        )


def _within_lines(source: Source, name: str, limits: TableLimits) -> None:
    """Counted before parsing: more lines than the header and `limits.rows` rows (a quoted value
    over several lines counts each line; so does a last line with no line break) is `TableTooLarge`."""
    lines, last = 0, b"\n"
    for block in _blocks(source):
        lines += block.count(b"\n")
        last = block[-1:] or last
    lines += last != b"\n"
    if lines - 1 > limits.rows:
        raise TableTooLarge(f"{name}: {lines - 1} lines of rows is over the {limits.rows}-row limit")


def _exists(path: Path, name: str) -> None:
    if not path.is_file():
        raise DataError(f"{name}: file not found")


def _not_empty(source: Source, name: str) -> None:
    head = source[:_BLOCK] if isinstance(source, bytes) else _head(source)
    if not head.strip():
        raise DataError(f"{name}: empty file (no header, no rows)")


def _head(path: Path) -> bytes:
    with path.open("rb") as fh:
        return fh.read(_BLOCK)


def _check_lines(source: Source, name: str, width: int) -> None:
    """Every line has `width` fields: separators counted outside quotes, one Polars pass. A line
    with an odd number of quotes is part of a field spanning lines: then the csv module counts."""
    line = pl.col("line")
    separators = line.str.count_matches(_SEP, literal=True)
    has_quote = line.str.contains(_QUOTE, literal=True)
    outside_quotes = line.str.replace_all(f"{_QUOTE}[^{_QUOTE}]*{_QUOTE}", "")
    fields = pl.when(has_quote).then(outside_quotes.str.count_matches(_SEP, literal=True)).otherwise(separators) + 1
    odd_quotes = has_quote & (line.str.count_matches(_QUOTE, literal=True) % 2 == 1)
    found = (
        pl.scan_lines(source, row_index_name="index")
        .filter((separators != width - 1) | has_quote)  # the cheap count first; quotes need a closer look
        .with_columns(fields.alias("fields"), odd_quotes.alias("odd"))
        .filter((pl.col("fields") != width) | pl.col("odd"))
        .head(1)
        .collect()
    )
    if found.height == 0:
        return
    if found.item(0, "odd"):
        _check_lines_exactly(source, name, width)
        return
    _raise_ragged(name, found.item(0, "index") + 1, found.item(0, "fields"), width)


def _check_lines_exactly(source: Source, name: str, width: int | None) -> None:
    """The slow, exact count (quoted fields over several lines); `width` None: the header's."""
    try:
        text = io.TextIOWrapper(_binary(source), encoding="utf-8", newline="")
        reader = csv.reader(text)
        header = next(reader, [])
        width = len(header) if width is None else width
        start = reader.line_num
        for row in reader:
            if len(row) != width:
                _raise_ragged(name, start + 1, len(row), width)
            start = reader.line_num
    except UnicodeDecodeError:
        return  # reported by _raise_undecodable with its line
    except csv.Error as exc:
        raise DataError(f"{name}, line {reader.line_num}: not a readable CSV row: {exc}") from exc


def _raise_ragged(name: str, line: int, fields: int, width: int) -> None:
    raise DataError(
        f"{name}, line {line}: {fields} field{'s' * (fields != 1)}, the header has {width} "
        + ("(a row cut short, or an empty line?)" if fields < width else "(a value holding a comma unquoted?)")
    )


def _binary(source: Source) -> io.BufferedIOBase:
    return io.BytesIO(source) if isinstance(source, bytes) else source.open("rb")


def _blocks(source: Source) -> Iterator[bytes]:
    if isinstance(source, bytes):
        yield source
        return
    with source.open("rb") as fh:
        yield from iter(lambda: fh.read(_BLOCK), b"")


def _raise_undecodable(source: Source, name: str) -> None:
    """The line and byte offset of the first byte that is not UTF-8, if there is one."""
    line, offset, carry = 1, 0, b""
    for block in _blocks(source):
        data = carry + block
        try:
            data.decode("utf-8")
            carry = b""
        except UnicodeDecodeError as exc:
            if exc.reason == "unexpected end of data" and len(data) - exc.start < 4:
                carry, data = data[exc.start :], data[: exc.start]  # a character split between blocks
            else:
                at = line + data.count(b"\n", 0, exc.start)
                raise DataError(
                    f"{name}, line {at}: bytes that are not UTF-8 ({data[exc.start : exc.start + 1]!r} at byte "
                    f"{offset + exc.start}); save the file as UTF-8"
                ) from None
        line += data.count(b"\n")
        offset += len(data)
    if carry:
        raise DataError(f"{name}, line {line}: the file ends inside a UTF-8 character; save the file as UTF-8")


# -- Parquet -----------------------------------------------------------------------------------
def _read_parquet(
    source: Source, name: str, required: Sequence[str], columns: Sequence[str] | None, limits: TableLimits | None
) -> pl.DataFrame:
    if isinstance(source, Path):
        _exists(source, name)
        if source.stat().st_size == 0:
            raise DataError(f"{name}: empty file (no header, no rows)")
    elif not source:
        raise DataError(f"{name}: empty file (no header, no rows)")
    footer = _parquet_footer(source, name)
    found = footer.schema.to_arrow_schema().names
    _no_duplicates(found, name)
    require_columns(found, required, name)
    selected = _selected(found, columns)
    if limits is not None:
        _within_metadata(footer, name, limits, selected)
    try:
        frame = pl.read_parquet(io.BytesIO(source) if isinstance(source, bytes) else source, columns=selected)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise DataError(f"{name}: not a readable Parquet file: {exc}") from exc
    if limits is not None and frame.estimated_size() > limits.bytes:  # e.g. one long value repeated by a dictionary
        raise TableTooLarge(f"{name}: {frame.estimated_size()} bytes decoded is over the {limits.bytes}-byte limit")
    return frame


def _parquet_footer(source: Source, name: str) -> pq.FileMetaData:
    """The file's footer (schema, row groups), read without its data."""
    try:
        return pq.read_metadata(io.BytesIO(source) if isinstance(source, bytes) else source)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{name}: not a readable Parquet file: {exc}") from exc


def _within_metadata(meta: pq.FileMetaData, name: str, limits: TableLimits, columns: Sequence[str] | None) -> None:
    """The rows and the uncompressed size of the column chunks to be read, as the footer declares
    them, within `limits` before any page is decompressed."""
    if meta.num_rows > limits.rows:
        raise TableTooLarge(f"{name}: {meta.num_rows} rows is over the {limits.rows}-row limit")
    wanted = None if columns is None else set(columns)
    size = 0
    for group in range(meta.num_row_groups):
        chunks = meta.row_group(group)
        for i in range(chunks.num_columns):
            chunk = chunks.column(i)
            if wanted is None or chunk.path_in_schema.split(".")[0] in wanted:
                size += chunk.total_uncompressed_size
    if size > limits.bytes:
        raise TableTooLarge(f"{name}: {size} bytes uncompressed is over the {limits.bytes}-byte limit")
