"""Keep runs apart: a run is (device, commit, threads, source folder).

Every figure and table groups rows by the ``device`` column. When two runs share a device kind
(a 2-thread run at one commit and a 1-thread run at another, or two folders passed with
``--results A --results B``) they would be pooled into one series; here each such run's
``device`` becomes a label naming what tells it apart ("cpu @b60223f, 2 threads"), and the
original value is kept in ``device_kind``. A device with one run keeps its plain name.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

PARTS = ("git_commit", "threads", "source_dir")


def _part(col: str, value) -> str:
    if (
        value is None
        or (isinstance(value, float) and pd.isna(value))
        or value is pd.NA
        or value == ""
    ):
        return ""
    if col == "git_commit":
        return "@" + str(value)[:7]
    if col == "threads":
        n = int(float(value))
        return f"{n}\u00a0thread{'s' if n != 1 else ''}"  # no line break inside
    return Path(str(value)).name


def _keys(df: pd.DataFrame) -> pd.DataFrame:
    k = pd.DataFrame(index=df.index)
    k["device"] = df["device"].astype(str)
    for col in PARTS:
        k[col] = [_part(col, v) for v in df[col]] if col in df.columns else ""
    return k


def run_labels(frames: list[pd.DataFrame]) -> dict[tuple, str]:
    """{(device, commit, threads, source): label} over the rows of all frames."""
    keys = (
        pd.concat([_keys(f) for f in frames if not f.empty], ignore_index=True).drop_duplicates()
        if any(not f.empty for f in frames)
        else pd.DataFrame(columns=["device", *PARTS])
    )
    labels = {}
    for dev, g in keys.groupby("device"):
        varying = [c for c in PARTS if g[c].nunique() > 1]
        if (
            "source_dir" in varying
            and len(varying) > 1
            and not g.duplicated(["git_commit", "threads"]).any()
        ):
            varying.remove("source_dir")  # commit/threads already tell the runs apart
        for _, r in g.iterrows():
            tag = ", ".join(p for p in (r[c] for c in varying) if p)
            labels[tuple(r[["device", *PARTS]])] = f"{dev} {tag}" if tag else dev
    return labels


def separate_runs(bench: pd.DataFrame, cascade: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Relabel ``device`` per run where runs of one device kind would otherwise pool.

    Runs are read off the bench rows; cascade rows take the label of their bench run (same
    device and folder), so an older cascade.csv without a threads column is not split off."""
    labels = run_labels([bench] if not bench.empty else [cascade])
    by_folder: dict[tuple, set] = {}
    for key, lab in labels.items():
        by_folder.setdefault((key[0], key[-1]), set()).add(lab)
    out = []
    for df in (bench, cascade):
        if df.empty or "device" not in df.columns:
            out.append(df)
            continue
        df = df.copy()
        df["device_kind"] = df["device"]
        names = []
        for r in _keys(df)[["device", *PARTS]].itertuples(index=False):
            lab = labels.get(tuple(r))
            if lab is None:
                same = by_folder.get((r[0], r[-1]), set())
                lab = next(iter(same)) if len(same) == 1 else r[0]
            names.append(lab)
        df["device"] = pd.Series(names, index=df.index, dtype="string")
        out.append(df)
    return out[0], out[1]
