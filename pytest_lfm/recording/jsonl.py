"""The files of one recording: exchanges as JSON lines, one file per test module.

Layout under the recording directory ``DIR``::

    DIR/<store id>/meta.json                   server's sglang version, launch arguments, served model name
    DIR/<store id>/<test module>.jsonl         one exchange per line; ``<test module>.2.jsonl``, ... past 1 MB

An exchange whose line would not fit in a file is stored as several ``piece_of`` lines. Re-recording a test appends
its exchanges; :func:`read_exchanges` keeps, for each test, only those of the latest run that recorded it.
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from pytest_lfm.recording.exchange import FORMAT, Exchange, RecordingError, node_key

MAX_FILE_BYTES = 1_000_000
PIECE_CHARS = 400_000  # a line longer than a file may hold is stored in pieces of this many characters

# a recording file's name: "<stem>.jsonl" is part 1, "<stem>.<n>.jsonl" part n
_PART = re.compile(r"^(?P<stem>.+?)(?:\.(?P<n>\d+))?\.jsonl$")


def safe_name(name: str, sep: str) -> str:
    """``name`` as a file name: each run of other characters than ``A-Za-z0-9._-`` replaced by ``sep``."""
    return re.sub(r"[^A-Za-z0-9._-]+", sep, name).strip(sep) or "_"


def _part_name(stem: str, n: int) -> str:
    return f"{stem}.jsonl" if n == 1 else f"{stem}.{n}.jsonl"


def module_stem(node: str) -> str:
    """The file name stem of the exchanges of test ``node``: its module's path."""
    module = node.split("::", 1)[0]
    return safe_name(module.removesuffix(".py"), "__")


def exchange_lines(exchange: Exchange, max_bytes: int) -> list[str]:
    """The JSONL lines of one exchange: one line, or pieces when it would not fit in a file."""
    line = json.dumps(exchange.to_json(), ensure_ascii=False, separators=(",", ":"))
    if len(line.encode()) + 1 <= max_bytes:
        return [line]
    text = json.dumps(exchange.to_json(), separators=(",", ":"))  # ASCII: pieces are sized in bytes
    size = max(1, min(PIECE_CHARS, max_bytes // 3))
    pieces = [text[i : i + size] for i in range(0, len(text), size)]
    uid = f"{exchange.run}/{exchange.node}/{exchange.seq}"
    return [json.dumps({"v": FORMAT, "piece_of": uid, "i": i, "n": len(pieces), "text": p}, separators=(",", ":"))
            for i, p in enumerate(pieces)]


def append_lines(root: Path, stem: str, lines: list[str], max_bytes: int) -> None:
    """Append ``lines`` to the last file of module ``stem`` under ``root``, a new part when it would pass the limit.

    The caller holds the recording's locks.
    """
    parts = [int(m["n"] or 1) for p in root.glob(f"{stem}*.jsonl")
             if (m := _PART.match(p.name)) and m["stem"] == stem]
    n = max(parts, default=1)
    for line in lines:
        path = root / _part_name(stem, n)
        size = path.stat().st_size if path.exists() else 0
        if size and size + len(line.encode()) + 1 > max_bytes:
            n += 1
            path = root / _part_name(stem, n)
        with path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")


def read_exchanges(root: Path, *, latest_only: bool = True) -> list[Exchange]:
    """Every exchange stored under ``root`` (one store), in file order; by default only each test's latest run."""
    exchanges: list[Exchange] = []
    pieces: dict[str, dict[int, str]] = defaultdict(dict)
    counts: dict[str, int] = {}
    for path in sorted(root.glob("*.jsonl"), key=_file_order):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                if "piece_of" in data:
                    pieces[data["piece_of"]][data["i"]] = data["text"]
                    counts[data["piece_of"]] = data["n"]
                    if len(pieces[data["piece_of"]]) == data["n"]:
                        parts = pieces.pop(data["piece_of"])
                        data = json.loads("".join(parts[i] for i in range(data["n"])))
                    else:
                        continue
                exchange = Exchange.from_json(data)
                exchange.node = node_key(exchange.node)  # stored ids key the same, with or without the suffix
                exchanges.append(exchange)
            except (ValueError, TypeError, KeyError) as exc:
                raise RecordingError(f"{path}:{number}: not a recorded exchange ({exc})") from None
    if pieces:
        raise RecordingError(f"{root}: incomplete multi-line exchanges {sorted(pieces)} (a recording cut short)")
    if latest_only:
        latest: dict[str, str] = {}
        for ex in exchanges:
            latest[ex.node] = max(latest.get(ex.node, ""), ex.run)
        exchanges = [ex for ex in exchanges if ex.run == latest[ex.node]]
    return exchanges


def _file_order(path: Path) -> tuple[str, int]:
    match = _PART.match(path.name)
    return (match["stem"], int(match["n"] or 1)) if match else (path.name, 0)


def write_exchanges(root: Path, exchanges: Iterable[Exchange], *, max_bytes: int = MAX_FILE_BYTES) -> list[Path]:
    """Replace the JSONL files under ``root`` by ``exchanges``, one file per test module, split at ``max_bytes``."""
    by_stem: dict[str, list[Exchange]] = defaultdict(list)
    for ex in exchanges:
        by_stem[module_stem(ex.node)].append(ex)
    written: dict[Path, list[str]] = {}
    for stem, group in sorted(by_stem.items()):
        n, size = 1, 0
        for ex in sorted(group, key=lambda e: (e.node, e.run, e.seq)):
            for line in exchange_lines(ex, max_bytes):
                length = len(line.encode()) + 1
                if size and size + length > max_bytes:
                    n, size = n + 1, 0
                written.setdefault(root / _part_name(stem, n), []).append(line)
                size += length
    root.mkdir(parents=True, exist_ok=True)
    for path, lines in written.items():
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    for stale in root.glob("*.jsonl"):
        if stale not in written:
            stale.unlink()
    return sorted(written)
