"""CSV files (`csv:PATH`): a header row, numeric feature columns and one label column (data.label_column).

`{split}` in PATH names one file per split (`digits_{split}.csv` -> splits `train`, `test`, ...); a PATH without
it is the split `train`. Labels that are all integers are classes; other numbers are regression targets; text
labels are class names (sorted, as class folders are).
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from nntrain.errors import NntrainError

Arrays = dict[str, tuple[np.ndarray, np.ndarray]]
PARSE_ROWS = 10_000  # rows converted to numbers by one numpy call


def files(pattern: str) -> dict[str, str]:
    """Split name -> CSV file of `pattern`; NntrainError when nothing matches."""
    if "{split}" not in pattern:
        if not tf.io.gfile.exists(pattern) or tf.io.gfile.isdir(pattern):
            raise NntrainError(f"data.source=csv:{pattern}: no such file; point it at a CSV file with a header row "
                               "(or a pattern with {split}, e.g. data_{split}.csv)")
        return {"train": pattern}
    head, tail = pattern.split("{split}", 1)
    matcher = re.compile(re.escape(head) + r"(\w+)" + re.escape(tail))
    found = {m.group(1): path for path in tf.io.gfile.glob(head + "*" + tail) if (m := matcher.fullmatch(path))}
    if not found:
        raise NntrainError(f"data.source=csv:{pattern}: no file matches (e.g. {pattern.replace('{split}', 'train')})")
    return found


def load(pattern: str, label_column: str) -> tuple[Arrays, tuple[str, ...] | None]:
    """`({split: (float32 features (N, F), labels (N,))}, class names or None)` of the CSV files of `pattern`."""
    tables = {split: _read_text(path, label_column) for split, path in sorted(files(pattern).items())}
    widths = {split: features.shape[1] for split, (features, _) in tables.items()}
    if len(set(widths.values())) > 1:
        raise NntrainError(f"data.source=csv:{pattern}: the splits have different numbers of feature columns "
                           f"{widths}: give every file the same columns")
    labels = [raw for _, raw in tables.values()]
    class_names = None
    if all(_all(raw, int) for raw in labels):
        converted = [np.array([int(v) for v in raw], dtype=np.int64) for raw in labels]
    elif all(_all(raw, float) for raw in labels):
        converted = [np.array([float(v) for v in raw], dtype=np.float32) for raw in labels]
    else:
        class_names = tuple(sorted({v for raw in labels for v in raw}))
        index = {name: i for i, name in enumerate(class_names)}
        converted = [np.array([index[v] for v in raw], dtype=np.int64) for raw in labels]
    arrays = {split: (features, y) for (split, (features, _)), y in zip(tables.items(), converted)}
    return arrays, class_names


def _read(path: str, label_column: str) -> tuple[np.ndarray, list[str]]:
    """(float32 features, raw label strings) of one file, parsed PARSE_ROWS rows at a time as the file streams
    in (memory: about the float32 array); blank lines are skipped, a UTF-8 byte order mark (Excel's "CSV UTF-8")
    is dropped; NntrainError naming a bad cell."""
    with tf.io.gfile.GFile(path, "rb") as f:
        rows = _rows(csv.reader(codecs.iterdecode(f, "utf-8-sig")), path)
        header = [name.strip() for name in next(rows, (1, []))[1]]
        if not header:
            raise NntrainError(f"csv file {path} is empty: it needs a header row and one row per example")
        _check_header(path, header, label_column)
        label_at = header.index(label_column)
        feature_at = [i for i in range(len(header)) if i != label_at]
        columns = [header[i] for i in feature_at]
        blocks, cells, numbers, labels = [], [], [], []
        for row_number, row in rows:
            if len(row) != len(header):
                raise NntrainError(f"csv file {path}, row {row_number}: {len(row)} cells, the header has "
                                   f"{len(header)}")
            label = row[label_at].strip()
            if not label:
                raise NntrainError(f"csv file {path}, row {row_number}: the label cell (column '{label_column}') is "
                                   "empty: fill it in or remove the row")
            cells.append([row[i] for i in feature_at])
            numbers.append(row_number)
            labels.append(label)
            if len(cells) == PARSE_ROWS:
                blocks.append(_numbers(cells, path, numbers, columns))
                cells, numbers = [], []
        if cells:
            blocks.append(_numbers(cells, path, numbers, columns))
    if not blocks:
        raise NntrainError(f"csv file {path} has a header row but no rows of examples: add one row per example")
    return np.concatenate(blocks), labels


def _check_header(path: str, header: list[str], label_column: str) -> None:
    """NntrainError for a header without the label column, with a column named twice or with no feature column."""
    if label_column not in header:
        raise NntrainError(f"csv file {path} has no column '{label_column}' (data.label_column); its columns "
                           f"are {', '.join(header)}: set --config.data.label_column=NAME")
    if twice := sorted({name for name in header if header.count(name) > 1}):
        raise NntrainError(f"csv file {path} names column '{twice[0]}' {header.count(twice[0])} times in its header: "
                           "give every column its own name")
    if len(header) == 1:
        raise NntrainError(f"csv file {path} has only the label column '{label_column}': it needs at least one "
                           "feature column")


def _rows(rows: Iterator[list[str]], path: str) -> Iterator[tuple[int, list[str]]]:
    """(row number, cells) of each row that is not blank, the header first; NntrainError for a row the csv module
    cannot read."""
    row_number = 0
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except csv.Error as e:  # e.g. a cell over the field limit: mostly an unclosed quote running on
            raise NntrainError(f"csv file {path}, line {rows.line_num}: {e}: a cell this long is no number; look for "
                               "an unclosed quote (\") before it") from None
        row_number += 1
        if len(row) > 1 or "".join(row).strip():  # not a blank line
            yield row_number, row


def _numbers(cells: list[list[str]], path: str, row_numbers: list[int], columns: list[str]) -> np.ndarray:
    """The float32 (rows, columns) array of a block of cells (from file rows `row_numbers`); NntrainError naming
    the first non-numeric cell."""
    try:
        return np.array(cells, dtype=np.float32).reshape(len(cells), len(columns))
    except ValueError:
        for row_number, row in zip(row_numbers, cells):
            for column, cell in zip(columns, row):
                try:
                    float(cell)
                except ValueError:
                    raise NntrainError(f"csv file {path}, row {row_number}, column '{column}': {cell!r} is not a "
                                       "number; features must be numeric: fix the cell or remove the column") from None
        raise


def _all(values: list[str], kind: type) -> bool:
    try:
        for value in values:
            kind(value)
    except ValueError:
        return False
    return True


def _read_text(path: str, label_column: str) -> tuple[np.ndarray, list[str]]:
    """`_read`, with a file that is not UTF-8 named in one line."""
    try:
        return _read(path, label_column)
    except UnicodeDecodeError as e:
        raise NntrainError(f"csv file {path} is not UTF-8 text ({e}): save it as UTF-8 (CSV UTF-8)") from None


def feature_columns(pattern: str, label_column: str) -> list[str]:
    """The feature columns of the CSV files of `pattern`, in order: the inputs a model trained on them takes."""
    _, path = sorted(files(pattern).items())[0]
    with tf.io.gfile.GFile(path, "rb") as f:
        header = next(csv.reader(codecs.iterdecode(f, "utf-8-sig")), [])
    return [name.strip() for name in header if name.strip() != label_column]
