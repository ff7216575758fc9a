"""Loaders for real interaction logs -> per-user behaviour sequences.

Formats (``--format``; autodetected from the path when omitted):

- ``seq``: one line per user, space-separated item ids, user = line number
  (gSASRec ML-1M split ``train/input.txt``; a folder holding ``train/input.txt`` also picks
  up ``test/output.txt`` as each user's held-out last item). Time-ordered.
- ``kgat``: one line per user, ``user item item ...`` (KGAT releases; a folder with
  ``train.txt`` and ``test.txt`` merges both). NOT time-ordered.
- ``pairs``: ``user item`` per line (JODIE Wikipedia); file order is time order.
- ``ml-dat``: MovieLens ``ratings.dat(.gz)``, ``user::item::rating::timestamp``.
- ``ml-csv``: MovieLens ``ratings.csv`` with header ``userId,movieId,rating,timestamp``.
- ``recbole``: RecBole atomic ``.inter`` file, tab-separated, typed header.
- ``table``: generic CSV or parquet with user, item and optional timestamp columns.

Text is decoded strictly (``encoding``, default UTF-8; ``--encoding`` at the command line): a
byte that is not valid in it is an error naming the file, never a replaced character. A
truncated or non-gzip ``.gz``, or a parquet file arrow cannot read, is a one-line ValueError
naming the file.

Rows that cannot be parsed raise :class:`MalformedInputError` naming file and line, unless
``skip_malformed=True``: then they are skipped and counted by reason in
``Interactions.skipped`` (never silently dropped). Empty files raise ``ValueError``.
"""

from __future__ import annotations

import codecs
import gzip
import io
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

FORMATS = ("seq", "kgat", "pairs", "ml-dat", "ml-csv", "recbole", "table")

USER_COLS = ("user", "user_id", "userid", "userId", "uid", "user_id:token")
ITEM_COLS = ("item", "item_id", "itemid", "movieId", "movie_id", "iid", "item_id:token")
TIME_COLS = ("timestamp", "time", "ts", "datetime", "date", "timestamp:float")


class MalformedInputError(ValueError):
    """A row that cannot be parsed; the message names the file and the 1-based line."""

    def __init__(self, path: str | Path, line: int, reason: str, text: str = "") -> None:
        shown = text if len(text) <= 80 else text[:77] + "..."
        msg = f"{path}:{line}: {reason}"
        if shown:
            msg += f" (line: {shown!r})"
        msg += "; pass skip_malformed=True (--skip-malformed) to skip and count such rows"
        super().__init__(msg)
        self.path = str(path)
        self.line = line
        self.reason = reason


@dataclass
class Interactions:
    """Per-user behaviour sequences with integer item indices 0..n_items-1."""

    name: str
    source: str
    format: str
    sequences: list[np.ndarray]  # one int64 array per user, time-ordered when time_ordered
    users: np.ndarray  # raw user ids (str), aligned with sequences
    items: np.ndarray  # raw item ids (str); index i <-> items[i]
    time_ordered: bool
    order_note: str
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    held_out: np.ndarray | None = None  # per-user item index (-1 = none) from a test split
    held_out_note: str = ""
    # a separate validation split (gSASRec's val/): input sequences and the item after each
    val_inputs: list[np.ndarray] | None = None
    val_targets: np.ndarray | None = None
    val_note: str = ""
    # per validation line, the training line it extends by one item (-1 = none found); with
    # gSASRec's split this rebuilds its test input, see ``match_validation_users``
    val_users: np.ndarray | None = None

    @property
    def n_users(self) -> int:
        return len(self.sequences)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))

    def lengths(self) -> np.ndarray:
        return np.fromiter(
            (len(s) for s in self.sequences), dtype=np.int64, count=len(self.sequences)
        )

    def describe(self) -> dict[str, object]:
        """What the CLI prints: sizes, skipped rows with reasons, ordering."""
        n = self.lengths()
        return {
            "dataset": self.name,
            "source": self.source,
            "format": self.format,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": self.n_interactions,
            "len_p50": float(np.median(n)) if len(n) else 0.0,
            "len_max": int(n.max()) if len(n) else 0,
            "users_ge_1000": int((n >= 1000).sum()),
            "skipped_rows": int(sum(self.skipped.values())),
            "skipped_reasons": dict(self.skipped),
            "time_ordered": self.time_ordered,
            "order_note": self.order_note,
            "held_out": self.held_out is not None,
            "held_out_note": self.held_out_note,
            "validation_users": 0 if self.val_inputs is None else len(self.val_inputs),
        }


# ----------------------------------------------------------------------------- helpers


def check_name(name: str) -> str:
    """A dataset name is used in file names (the embedding cache, output tables): no path
    separators, no ``..``, nothing empty, so ``--name ../../x`` cannot write outside a folder."""
    bad = (
        not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\0" in name
        or ".." in name
        or name != name.strip()
    )
    if bad:
        raise ValueError(
            f"dataset name {name!r} is not allowed: use letters, digits, '-', '_' "
            "or '.', without '/', '\\' or '..'"
        )
    return name


def check_encoding(encoding: str) -> str:
    """``encoding`` if Python knows it, else ValueError (``--encoding`` is a user value)."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ValueError(f"unknown encoding {encoding!r} (e.g. utf-8, latin-1, utf-16)") from None
    return encoding


def _open_text(path: Path, encoding: str = "utf-8") -> io.TextIOBase:
    """Strict decoding: a byte that is not valid ``encoding`` is an error, never replaced
    (``errors="replace"`` once made ``café`` and ``cafí`` the same item of a latin-1 file)."""
    encoding = _sig(check_encoding(encoding))
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding=encoding, errors="strict")
    return open(path, encoding=encoding, errors="strict")


def _sig(encoding: str) -> str:
    """UTF-8 is read as ``utf-8-sig``: the same text, minus a byte-order mark at the start
    (spreadsheet exports write one; it would otherwise stick to the first id or column name)."""
    return "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding


@contextmanager
def _readable(path: Path, encoding: str, line: Callable[[], int] = lambda: 0) -> Iterator[None]:
    """Turn decoding and gzip failures into one-line ValueErrors naming the file."""
    try:
        yield
    except UnicodeDecodeError as exc:
        at = f", near line {line()}" if line() else ""
        raise ValueError(
            f"{path}{at}: not valid {encoding} text ({exc.reason}); "
            "pass --encoding (for example latin-1 or utf-16) if the file uses another encoding"
        ) from None
    except EOFError:
        raise ValueError(
            f"{path}: the gzip file is truncated (cut short while compressing or copying?)"
        ) from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise ValueError(f"{path}: not a valid gzip file ({exc})") from None


def _lines(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """(1-based line number, stripped line); raises ValueError on an empty file."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    any_line = False
    i = 0
    with _readable(path, encoding, lambda: i + 1), _open_text(path, encoding) as fh:
        # text is decoded in blocks, so a bad byte is reported near (not exactly at) its line
        for i, raw in enumerate(fh, start=1):
            any_line = True
            yield i, raw.strip()
    if not any_line:
        raise ValueError(f"{path}: file is empty (no interactions)")


class _Skipper:
    """Raise or count malformed rows."""

    def __init__(self, path: Path, skip: bool) -> None:
        self.path, self.skip, self.counts = path, skip, Counter()

    def bad(self, line: int, reason: str, text: str = "") -> None:
        if not self.skip:
            raise MalformedInputError(self.path, line, reason, text)
        self.counts[f"{self.path.name}: {reason}"] += 1

    def note(self, reason: str) -> None:
        """Count a row skipped for a benign reason (e.g. a user line without items)."""
        self.counts[f"{self.path.name}: {reason}"] += 1


def _build(
    name: str,
    source: str,
    fmt: str,
    users: list[str] | np.ndarray,
    items: list[str] | np.ndarray,
    times: np.ndarray | None,
    time_ordered: bool,
    order_note: str,
    skipped: Counter,
) -> Interactions:
    """Group (user, item[, time]) rows in file order into per-user sequences."""
    if len(users) == 0:
        raise ValueError(f"{source}: no valid interactions (skipped: {dict(skipped) or 'none'})")
    ucodes, uniq_users = pd.factorize(pd.Series(users, dtype=str), sort=False)
    icodes, uniq_items = pd.factorize(pd.Series(items, dtype=str), sort=False)
    order_keys = [np.arange(len(ucodes))]
    if times is not None:
        order_keys.append(np.asarray(times, dtype=np.float64))
    order_keys.append(ucodes)
    order = np.lexsort(order_keys)  # by user, then time, then file order (stable)
    sorted_items = icodes[order].astype(np.int64)
    counts = np.bincount(ucodes, minlength=len(uniq_users))
    seqs = np.split(sorted_items, np.cumsum(counts)[:-1])
    return Interactions(
        name=name,
        source=source,
        format=fmt,
        sequences=[np.ascontiguousarray(s) for s in seqs],
        users=np.asarray(uniq_users, dtype=str),
        items=np.asarray(uniq_items, dtype=str),
        time_ordered=time_ordered,
        order_note=order_note,
        skipped=dict(skipped),
    )


def _is_int_token(tok: str) -> bool:
    return tok.lstrip("-").isdigit()


# ----------------------------------------------------------------------------- formats


def load_seq(
    path: str | Path,
    held_out_path: str | Path | None = None,
    skip_malformed: bool = False,
    name: str | None = None,
    encoding: str = "utf-8",
) -> Interactions:
    """One line per user of item ids (user = line number); optional held-out file, one item per line."""
    path = Path(path)
    sk = _Skipper(path, skip_malformed)
    users: list[str] = []
    items: list[str] = []
    for ln, line in _lines(path, encoding):
        toks = line.split()
        if not toks:
            sk.note("empty line (user without items)")
            continue
        bad = next((t for t in toks if not _is_int_token(t)), None)
        if bad is not None:
            sk.bad(ln, f"non-integer item id {bad!r}", line)
            continue
        users.extend([str(ln)] * len(toks))
        items.extend(toks)
    data = _build(
        name or path.stem,
        str(path),
        "seq",
        users,
        items,
        None,
        True,
        "time-ordered: file order of each line is chronological",
        sk.counts,
    )
    if held_out_path is not None:
        _attach_held_out(data, Path(held_out_path), skip_malformed, encoding)
    return data


def _attach_held_out(
    data: Interactions, path: Path, skip_malformed: bool, encoding: str = "utf-8"
) -> None:
    """Held-out item per user (line i <-> user i, matched by user id = line number)."""
    sk = _Skipper(path, skip_malformed)
    index = {raw: i for i, raw in enumerate(data.items)}
    extra: list[str] = []
    by_user: dict[str, str] = {}
    for ln, line in _lines(path, encoding):
        toks = line.split()
        if len(toks) != 1 or not _is_int_token(toks[0]):
            sk.bad(ln, "held-out line must hold exactly one integer item id", line)
            continue
        by_user[str(ln)] = toks[0]
    held = np.full(data.n_users, -1, dtype=np.int64)
    for u, raw_user in enumerate(data.users):
        raw = by_user.get(raw_user)
        if raw is None:
            continue
        if raw not in index:
            index[raw] = len(data.items) + len(extra)
            extra.append(raw)
        held[u] = index[raw]
    unmatched = len(set(by_user) - set(data.users.tolist()))
    if unmatched:  # counted, never silently dropped
        sk.counts[
            f"{path.name}: held-out line without a matching user (an empty training line)"
        ] += unmatched
    if extra:
        data.items = np.concatenate([data.items, np.asarray(extra, dtype=str)])
    data.held_out = held
    data.held_out_note = f"held-out last item per user from {path}"
    for k, v in sk.counts.items():
        data.skipped[k] = data.skipped.get(k, 0) + v


def attach_validation(
    data: Interactions, inputs: Path, outputs: Path, encoding: str = "utf-8"
) -> None:
    """gSASRec's validation split: line i of ``inputs`` is a user's input sequence, line i of
    ``outputs`` the one item after it. Item ids map through the training index (new ids get
    new indices). Both files must exist and have the same number of lines."""
    for f in (inputs, outputs):
        if not f.exists():
            raise ValueError(f"{f.parent}: validation split needs both input.txt and output.txt")
    index = {raw: i for i, raw in enumerate(data.items)}
    extra: list[str] = []

    def idx(tok: str, f: Path, ln: int) -> int:
        if not _is_int_token(tok):
            raise ValueError(f"{f}:{ln}: non-integer item id {tok!r}")
        if tok not in index:
            index[tok] = len(data.items) + len(extra)
            extra.append(tok)
        return index[tok]

    seqs = [
        np.array([idx(t, inputs, ln) for t in line.split()], dtype=np.int64)
        for ln, line in _lines(inputs, encoding)
    ]
    targets = []
    for ln, line in _lines(outputs, encoding):
        toks = line.split()
        if len(toks) != 1:
            raise ValueError(f"{outputs}:{ln}: a validation output line holds exactly one item id")
        targets.append(idx(toks[0], outputs, ln))
    if len(seqs) != len(targets) or not seqs:
        raise ValueError(
            f"{inputs.parent}: {len(seqs)} validation inputs but {len(targets)} outputs "
            "(need the same number, at least one)"
        )
    if any(len(x) == 0 for x in seqs):
        raise ValueError(f"{inputs}: a validation input line is empty")
    if extra:
        data.items = np.concatenate([data.items, np.asarray(extra, dtype=str)])
    data.val_inputs, data.val_targets = seqs, np.asarray(targets, dtype=np.int64)
    data.val_users = match_validation_users(data.sequences, seqs)
    data.val_note = f"validation split: {len(seqs)} users from {inputs.parent}"


def match_validation_users(train: list[np.ndarray], val_inputs: list[np.ndarray]) -> np.ndarray:
    """Index of the training line each validation input extends by exactly one item, in
    order (gSASRec writes both files in the same user order), -1 where none does.

    Why: gSASRec's split keeps a user's last two items out of ``train/input.txt`` (three for
    a validation user) and tests on ``test/input.txt`` = everything but the last item. A copy
    without ``test/input.txt`` has lost the item just before each test item; for the
    validation users ``val/input.txt`` + ``val/output.txt`` is exactly that test input."""
    out = np.full(len(val_inputs), -1, dtype=np.int64)
    i = 0
    for j, v in enumerate(val_inputs):
        k = i
        while k < len(train) and not (
            len(train[k]) == len(v) - 1 and np.array_equal(train[k], v[:-1])
        ):
            k += 1
        if k < len(train):
            out[j], i = k, k + 1
    return out


def load_kgat(
    paths: list[Path],
    skip_malformed: bool = False,
    name: str | None = None,
    encoding: str = "utf-8",
) -> Interactions:
    """``user item item ...`` per line; several files (train, test) are concatenated per user."""
    users: list[str] = []
    items: list[str] = []
    counts: Counter = Counter()
    for path in paths:
        sk = _Skipper(path, skip_malformed)
        for ln, line in _lines(path, encoding):
            toks = line.split()
            if not toks:
                sk.note("empty line")
                continue
            bad = next((t for t in toks if not _is_int_token(t)), None)
            if bad is not None:
                sk.bad(ln, f"non-integer id {bad!r}", line)
                continue
            if len(toks) == 1:
                sk.note("user line without items")
                continue
            users.extend([toks[0]] * (len(toks) - 1))
            items.extend(toks[1:])
        counts.update(sk.counts)
    return _build(
        name or paths[0].parent.name,
        ", ".join(map(str, paths)),
        "kgat",
        users,
        items,
        None,
        False,
        "NOT time-ordered: KGAT lists are unordered item sets (train then test per user)",
        counts,
    )


def load_pairs(
    path: str | Path, skip_malformed: bool = False, name: str | None = None, encoding: str = "utf-8"
) -> Interactions:
    """``user item`` per line; file order is taken as time order."""
    path = Path(path)
    sk = _Skipper(path, skip_malformed)
    users: list[str] = []
    items: list[str] = []
    for ln, line in _lines(path, encoding):
        toks = line.replace(",", " ").split()
        if not toks:
            sk.note("empty line")
            continue
        if len(toks) != 2:
            sk.bad(ln, f"expected 2 fields 'user item', got {len(toks)}", line)
            continue
        users.append(toks[0])
        items.append(toks[1])
    return _build(
        name or path.stem,
        str(path),
        "pairs",
        users,
        items,
        None,
        True,
        "time-ordered: file order taken as chronological",
        sk.counts,
    )


def load_ml_dat(
    path: str | Path,
    skip_malformed: bool = False,
    name: str | None = None,
    encoding: str = "latin-1",
) -> Interactions:
    """MovieLens ``user::item::rating::timestamp`` (plain or .gz), sorted by timestamp per user."""
    path = Path(path)
    sk = _Skipper(path, skip_malformed)
    users: list[str] = []
    items: list[str] = []
    times: list[float] = []
    for ln, line in _lines(path, encoding):  # MovieLens .dat files are latin-1
        if not line:
            sk.note("empty line")
            continue
        toks = line.split("::")
        if len(toks) != 4:
            sk.bad(ln, f"expected 4 '::'-separated fields, got {len(toks)}", line)
            continue
        try:
            ts = float(toks[3])
        except ValueError:
            sk.bad(ln, f"timestamp {toks[3]!r} is not a number", line)
            continue
        users.append(toks[0])
        items.append(toks[1])
        times.append(ts)
    return _build(
        name or path.parent.name,
        str(path),
        "ml-dat",
        users,
        items,
        np.asarray(times),
        True,
        "time-ordered: sorted by rating timestamp (ties in file order)",
        sk.counts,
    )


def _delimited(
    path: Path,
    sep: str,
    user_col: str,
    item_col: str,
    time_col: str | None,
    sk: _Skipper,
    encoding: str = "utf-8",
) -> tuple[list[str], list[str], np.ndarray | None]:
    """Parse a delimited file with a header line, reporting bad rows by line number."""
    it = _lines(path, encoding)
    try:
        _, header = next(it)
    except StopIteration:  # pragma: no cover - _lines raises first
        raise ValueError(f"{path}: file is empty") from None
    cols = [c.strip() for c in header.split(sep)]
    for c in (user_col, item_col) + ((time_col,) if time_col else ()):
        if c not in cols:
            raise MalformedInputError(
                path, 1, f"header has no column {c!r} (columns: {cols})", header
            )
    iu, ii = cols.index(user_col), cols.index(item_col)
    it_ = cols.index(time_col) if time_col else None
    users: list[str] = []
    items: list[str] = []
    times: list[float] = []
    any_row = False
    for ln, line in it:
        any_row = True
        if not line:
            sk.note("empty line")
            continue
        toks = line.split(sep)
        if len(toks) != len(cols):
            sk.bad(ln, f"expected {len(cols)} fields, got {len(toks)}", line)
            continue
        u, i = toks[iu].strip(), toks[ii].strip()
        if not u or not i:
            sk.bad(ln, "missing user or item", line)
            continue
        if it_ is not None:
            try:
                times.append(float(toks[it_]))
            except ValueError:
                sk.bad(ln, f"timestamp {toks[it_]!r} is not a number", line)
                continue
        users.append(u)
        items.append(i)
    if not any_row:
        raise ValueError(f"{path}: header only, no interactions")
    return users, items, (np.asarray(times) if it_ is not None else None)


def load_ml_csv(
    path: str | Path, skip_malformed: bool = False, name: str | None = None, encoding: str = "utf-8"
) -> Interactions:
    """MovieLens ``ratings.csv`` (``userId,movieId,rating,timestamp``)."""
    path = Path(path)
    sk = _Skipper(path, skip_malformed)
    users, items, times = _delimited(path, ",", "userId", "movieId", "timestamp", sk, encoding)
    return _build(
        name or path.parent.name,
        str(path),
        "ml-csv",
        users,
        items,
        times,
        True,
        "time-ordered: sorted by rating timestamp (ties in file order)",
        sk.counts,
    )


def load_recbole(
    path: str | Path, skip_malformed: bool = False, name: str | None = None, encoding: str = "utf-8"
) -> Interactions:
    """RecBole atomic ``.inter`` (tab-separated, header ``user_id:token item_id:token ...``)."""
    path = Path(path)
    sk = _Skipper(path, skip_malformed)
    with _readable(path, encoding, lambda: 1), _open_text(path, encoding) as fh:
        header = fh.readline().strip()
    if not header:
        raise ValueError(f"{path}: file is empty (no interactions)")
    cols = header.split("\t")
    tcol = next((c for c in cols if c.split(":")[0] == "timestamp"), None)
    ucol = next((c for c in cols if c.split(":")[0] == "user_id"), None)
    icol = next((c for c in cols if c.split(":")[0] == "item_id"), None)
    if ucol is None or icol is None:
        raise MalformedInputError(
            path, 1, f"header needs user_id:token and item_id:token (got {cols})", header
        )
    users, items, times = _delimited(path, "\t", ucol, icol, tcol, sk, encoding)
    note = (
        "time-ordered: sorted by timestamp (ties in file order)"
        if tcol
        else "NOT time-ordered: no timestamp column, file order kept"
    )
    return _build(
        name or path.stem,
        str(path),
        "recbole",
        users,
        items,
        times,
        tcol is not None,
        note,
        sk.counts,
    )


def _pick(
    cols: list[str], wanted: str | None, candidates: tuple[str, ...], what: str, path: Path
) -> str | None:
    if wanted:
        if wanted not in cols:
            raise ValueError(f"{path}: no {what} column {wanted!r}; columns are {cols}")
        return wanted
    lower = {c.lower(): c for c in cols}
    for c in candidates:
        if c.lower() in lower:
            return lower[c.lower()]
    return None


def load_table(
    path: str | Path,
    user_col: str | None = None,
    item_col: str | None = None,
    time_col: str | None = None,
    skip_malformed: bool = False,
    name: str | None = None,
    encoding: str = "utf-8",
) -> Interactions:
    """Generic CSV/TSV/parquet with user, item and optional timestamp columns."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: file is empty (no interactions)")
    from .filetype import sniff

    is_parquet = path.suffix == ".parquet" or (path.is_file() and sniff(path) == "parquet")
    if is_parquet:
        try:
            df = pd.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - arrow raises many types for a bad file
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ValueError(
                f"{path}: not a readable parquet file ({type(exc).__name__}: {msg})"
            ) from None
    else:
        sep = "\t" if path.suffix in (".tsv", ".tab") else ","
        try:
            with _readable(path, check_encoding(encoding)):
                df = pd.read_csv(
                    path,
                    sep=sep,
                    dtype=str,
                    keep_default_na=True,
                    on_bad_lines="error",
                    encoding=_sig(encoding),
                    encoding_errors="strict",
                )
        except pd.errors.EmptyDataError:
            raise ValueError(f"{path}: file is empty (no interactions)") from None
        except pd.errors.ParserError as exc:
            raise MalformedInputError(
                path, _parser_line(str(exc)), f"CSV parse error: {exc}"
            ) from None
    if df.empty:
        raise ValueError(f"{path}: header only, no interactions")
    cols = [str(c) for c in df.columns]
    ucol = _pick(cols, user_col, USER_COLS, "user", path)
    icol = _pick(cols, item_col, ITEM_COLS, "item", path)
    if ucol is None or icol is None:
        raise ValueError(
            f"{path}: cannot find user/item columns in {cols}; pass --user-col/--item-col"
        )
    tcol = _pick(cols, time_col, TIME_COLS, "timestamp", path)
    sk = _Skipper(path, skip_malformed)
    first = 1 if is_parquet else 2  # report 1-based file lines (CSV: header is line 1)
    where = "row" if is_parquet else "line"
    missing = df[ucol].isna() | df[icol].isna()
    for pos in np.flatnonzero(missing.to_numpy()):
        sk.bad(int(pos) + first, f"missing user or item ({where} {int(pos) + first})")
    df = df.loc[~missing]
    times = None
    if tcol is not None:
        t = pd.to_numeric(df[tcol], errors="coerce")
        if t.isna().any():
            dt = pd.to_datetime(df[tcol], errors="coerce", utc=True)
            t = (dt - pd.Timestamp(0, tz="UTC")).dt.total_seconds()  # NaT -> NaN
        bad = t.isna().to_numpy()
        for pos in np.flatnonzero(bad):
            sk.bad(int(df.index[pos]) + first, f"unparsable timestamp {df[tcol].iloc[pos]!r}")
        df, t = df.loc[~bad], t.loc[~bad]
        times = t.to_numpy(dtype=np.float64)
    note = (
        f"time-ordered: sorted by column {tcol!r} (ties in file order)"
        if tcol
        else "NOT time-ordered: no timestamp column, file order kept"
    )
    return _build(
        name or path.stem,
        str(path),
        "table",
        df[ucol].astype(str).to_numpy(),
        df[icol].astype(str).to_numpy(),
        times,
        tcol is not None,
        note,
        sk.counts,
    )


def _parser_line(msg: str) -> int:
    import re

    m = re.search(r"line (\d+)", msg)
    return int(m.group(1)) if m else 0


# ----------------------------------------------------------------------------- autodetect


def detect_format(path: str | Path, encoding: str = "utf-8") -> str:
    """Guess the format of a file or folder (see module docstring)."""
    p = Path(path)
    if p.is_dir():
        if (p / "train" / "input.txt").exists():
            return "seq"
        if (p / "train.txt").exists() or (p / "test.txt").exists():
            return "kgat"
        for pattern, fmt in (
            ("ratings.dat*", "ml-dat"),
            ("ratings.csv", "ml-csv"),
            ("*.inter", "recbole"),
        ):
            if list(p.glob(pattern)):
                return fmt
        txt = sorted(p.glob("*.txt"))
        if len(txt) == 1:
            return detect_format(txt[0], encoding)
        pq = sorted(p.glob("*.parquet")) + sorted(p.glob("*.csv"))
        if len(pq) == 1:
            return "table"
        raise ValueError(
            f"{p}: cannot tell the format of this folder; pass --format (one of {FORMATS})"
        )
    if p.is_file():
        from .filetype import check_log_file, sniff

        check_log_file(p)  # arrays and pickles are not logs: say what they are
        if sniff(p) == "parquet":
            return "table"
    name = p.name
    if name.startswith("ratings.dat"):
        return "ml-dat"
    if name == "ratings.csv":
        return "ml-csv"
    if p.suffix == ".inter":
        return "recbole"
    if p.suffix in (".parquet", ".csv", ".tsv"):
        return "table"
    if name == "input.txt":
        return "seq"
    # sniff: every line 2 fields -> pairs; otherwise user-first lists
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    counts = []
    with _readable(p, encoding), _open_text(p, encoding) as fh:
        for _, line in zip(range(200), fh, strict=False):
            if line.strip():
                counts.append(len(line.replace(",", " ").split()))
    if not counts:
        raise ValueError(f"{p}: file is empty (no interactions)")
    if all(c == 2 for c in counts):
        return "pairs"
    return "kgat"


def load(
    path: str | Path,
    fmt: str | None = None,
    skip_malformed: bool = False,
    name: str | None = None,
    user_col: str | None = None,
    item_col: str | None = None,
    time_col: str | None = None,
    encoding: str | None = None,
) -> Interactions:
    """Load a file or folder in any supported format (autodetected unless ``fmt`` is given).

    ``encoding``: of text files (default UTF-8; MovieLens ``.dat``: latin-1); decoding is strict."""
    p = Path(path)
    if p.is_file():
        from .filetype import check_log_file

        check_log_file(p)
    enc = check_encoding(encoding or "utf-8")
    if name is not None:
        check_name(name)
    fmt = fmt or detect_format(p, enc)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {FORMATS}")
    dname = name or (
        p.name if p.is_dir() else (p.parent.name if p.parent.name not in ("", "train") else p.stem)
    )
    if fmt == "seq":
        if p.is_dir():
            held = p / "test" / "output.txt"
            data = load_seq(
                p / "train" / "input.txt",
                held if held.exists() else None,
                skip_malformed,
                dname,
                enc,
            )
            val_in, val_out = p / "val" / "input.txt", p / "val" / "output.txt"
            if val_in.exists() or val_out.exists():
                attach_validation(data, val_in, val_out, enc)
            return data
        return load_seq(p, None, skip_malformed, dname, enc)
    if fmt == "kgat":
        files = [f for f in (p / "train.txt", p / "test.txt") if f.exists()] if p.is_dir() else [p]
        if not files:
            raise ValueError(f"{p}: no train.txt/test.txt for format kgat")
        return load_kgat(files, skip_malformed, dname, enc)

    def one(pattern: str) -> Path:
        if not p.is_dir():
            return p
        found = sorted(p.glob(pattern))
        if not found:
            raise ValueError(f"{p}: no file matching {pattern} for format {fmt}")
        return found[0]

    if fmt == "pairs":
        return load_pairs(one("*.txt"), skip_malformed, dname, enc)
    if fmt == "ml-dat":
        return load_ml_dat(one("ratings.dat*"), skip_malformed, dname, encoding or "latin-1")
    if fmt == "ml-csv":
        return load_ml_csv(one("ratings.csv"), skip_malformed, dname, enc)
    if fmt == "recbole":
        return load_recbole(one("*.inter"), skip_malformed, dname, enc)
    target = p
    if p.is_dir():
        found = sorted(p.glob("*.parquet")) + sorted(p.glob("*.csv"))
        if not found:
            raise ValueError(f"{p}: no .parquet/.csv for format table")
        target = found[0]
    return load_table(target, user_col, item_col, time_col, skip_malformed, dname, enc)
