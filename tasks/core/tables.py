"""Reading a CSV or Parquet table (a file or a request body) with its whole-file problems as
`DataError`s naming the file and the 1-based line: an empty file, a header and no rows, a row
with more or fewer fields than the header, bytes that are not UTF-8, declared columns missing
(a `;` file read as `,` is one column). Row-level problems (bad values) are not checked here:
they are quarantined with reasons by the schema.

CSV values are read as text, so bad values reach validation. The field count of every line is
checked on the bytes read, in one Polars pass over the lines (about half a read's time); only a
file with a quoted field spanning lines falls back to Python's `csv` module for the count.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from pathlib import Path

import polars as pl

from tasks.core.errors import DataError, SpecError

Source = Path | bytes
_SEP, _QUOTE = ",", '"'
_BLOCK = 1 << 22
_OTHER_SEPARATORS = (";", "\t", "|")


def table_format(source: Source, fmt: str | None = None) -> str:
    """`csv` or `parquet`: as given, else by the Parquet magic bytes of a body or a file's suffix."""
    if fmt:
        return fmt
    if isinstance(source, bytes):
        return "parquet" if source[:4] == b"PAR1" else "csv"
    return "parquet" if source.suffix.lower() in {".parquet", ".pq"} else "csv"


def read_table(source: Source, name: str, required: Sequence[str] = (), fmt: str | None = None) -> pl.DataFrame:
    """The whole table (CSV values as text), or a `DataError` naming `name` and the line."""
    frame = _read_parquet(source, name) if table_format(source, fmt) == "parquet" else _read_csv(source, name)
    require_columns(frame.columns, required, name)
    return require_rows(frame, name)


def scan_table(path: Path, name: str, required: Sequence[str] = (), fmt: str | None = None) -> pl.LazyFrame:
    """A lazy scan for tables larger than memory: the file's whole-file checks first, in
    streaming passes that hold no more than a block of it."""
    _exists(path, name)
    if table_format(path, fmt) == "parquet":
        try:
            scan = pl.scan_parquet(path)
            columns = scan.collect_schema().names()
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise DataError(f"{name}: not a readable Parquet file: {exc}") from exc
    else:
        _not_empty(path, name)
        scan = pl.scan_csv(path, infer_schema=False)
        try:
            columns = scan.collect_schema().names()
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


# -- CSV ---------------------------------------------------------------------------------------
def _read_csv(source: Source, name: str) -> pl.DataFrame:
    if isinstance(source, Path):
        _exists(source, name)
    _not_empty(source, name)
    try:
        frame = pl.read_csv(source, infer_schema=False)
        _check_lines(source, name, frame.width)
    except pl.exceptions.PolarsError as exc:  # too many fields, bytes that are not UTF-8, ...
        _check_lines_exactly(source, name, None)
        _raise_undecodable(source, name)
        raise DataError(f"{name}: not a readable CSV file: {exc}") from exc
    return frame


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
def _read_parquet(source: Source, name: str) -> pl.DataFrame:
    if isinstance(source, Path):
        _exists(source, name)
        if source.stat().st_size == 0:
            raise DataError(f"{name}: empty file (no header, no rows)")
    elif not source:
        raise DataError(f"{name}: empty file (no header, no rows)")
    try:
        return pl.read_parquet(io.BytesIO(source) if isinstance(source, bytes) else source)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise DataError(f"{name}: not a readable Parquet file: {exc}") from exc
