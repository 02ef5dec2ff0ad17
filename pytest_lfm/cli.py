"""The ``pytest-lfm`` console script: ``micro build``, ``micro verify``, ``compare`` and ``merge`` (subcommands).

Exit codes of ``compare`` and ``merge``: 0 done (compare: no regression, or the same verdicts), 1 compare found a
regression or changed verdicts, 2 bad input (a report missing, unreadable, of another schema, reports that cannot
be merged, or reports with too few checks in common to compare).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pytest_lfm import micro


def _micro_build(args: argparse.Namespace) -> int:
    unknown = [n for n in args.names if n not in micro.NAMES]
    if unknown:
        print(f"pytest-lfm micro build: unknown checkpoint(s) {', '.join(unknown)}; choose from "
              f"{', '.join(micro.NAMES)}", file=sys.stderr)
        return 2
    for name in args.names or micro.NAMES:
        start = time.monotonic()
        log = (lambda s: print(s, file=sys.stderr, flush=True)) if args.verbose else None
        path = micro.build(name, device=args.device, force=args.force, log=log)
        record = micro.info(path)
        print(f"{name}\t{path}\t{time.monotonic() - start:.1f}s\tdevice={record.get('device')}"
              f"\tbuild={record.get('build_seconds')}s\tsteps={record.get('steps')}\tmargin={record.get('min_margin')}",
              flush=True)
    return 0


def _micro_verify(args: argparse.Namespace) -> int:
    from pytest_lfm.micro.verify import verify

    path = micro.build(args.name, device=args.device)
    results = verify(path, args.name)
    exact = sum(r.exact for r in results)
    summary = {"checkpoint": args.name, "path": str(path), "turns": len(results), "exact": exact,
               "percent": round(100.0 * exact / len(results), 1) if results else 0.0,
               "mismatches": [{"turn": r.turn_id, "sglang_rendering": r.sglang_rendering, "expected": r.expected,
                               "got": r.got} for r in results if not r.exact]}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{'checkpoint':<12}{'turns':>7}{'exact':>7}{'percent':>9}")
        print(f"{args.name:<12}{len(results):>7}{exact:>7}{summary['percent']:>8}%")
        for miss in summary["mismatches"]:
            print(f"  {miss['turn']} [{miss['sglang_rendering']}]: expected {miss['expected']!r}, got {miss['got']!r}")
    return 0 if exact == len(results) else 1


BAD_INPUT = 2
# the share of the smaller report's checks the other must hold for --same-verdicts (when --min-overlap is not given)
SAME_VERDICTS_MIN_OVERLAP = 0.9


def _bad_input(command: str, message: object) -> int:
    print(f"pytest-lfm {command}: {message}", file=sys.stderr)
    return BAD_INPUT


def _fraction(text: str) -> float:
    wrong = argparse.ArgumentTypeError(f"{text!r} is no fraction in (0, 1], e.g. 0.9 for 90%")
    try:
        value = float(text)
    except ValueError:
        raise wrong from None
    if not 0 < value <= 1:
        raise wrong
    return value


def _compare(args: argparse.Namespace) -> int:
    from pytest_lfm.report.compare import ReportError, compare, render_markdown

    if args.changed is not None and not args.same_verdicts:
        return _bad_input("compare", f"--changed {args.changed} names verdicts known to differ: it goes with "
                                     "--same-verdicts")
    try:
        diff = compare(args.old, args.new, args.threshold)
    except ReportError as exc:
        return _bad_input("compare", exc)
    print(render_markdown(diff))
    min_overlap = args.min_overlap if args.min_overlap is not None else (
        SAME_VERDICTS_MIN_OVERLAP if args.same_verdicts else None)
    shared = (f"{args.old} and {args.new} have {diff.shared_checks} check ids in common, {diff.overlap:.1%} of the "
              f"smaller report's {min(diff.old_checks, diff.new_checks)} checks")
    if not diff.shared_checks:
        return _bad_input("compare", f"{shared}: nothing was compared. Compare reports of the same selection "
                                     "(--lfm-model, test paths, -k / -m)")
    if min_overlap is not None and diff.overlap < min_overlap:
        return _bad_input("compare", f"{shared}, below --min-overlap {min_overlap:.0%}: the reports ran different "
                                     "selections, so their verdicts say little about each other. Compare reports of "
                                     "the same selection, or lower --min-overlap")
    if args.same_verdicts:
        changed = {c.nodeid for c in diff.verdict_changes}
        if args.changed is None:
            return 1 if changed else 0
        try:
            expected = changed_checks(args.changed)
        except OSError as exc:
            return _bad_input("compare", f"--changed {args.changed}: {exc.strerror}; pass a file of check ids")
        stale = sorted(expected - changed)
        if stale:
            return _bad_input("compare", f"--changed {args.changed} names {len(stale)} checks whose verdict did not "
                                         f"change (or that one report lacks), e.g. {stale[0]}: remove them")
        unexpected = sorted(changed - expected)
        for nodeid in unexpected:
            print(f"changed and not in {args.changed}: {nodeid}", file=sys.stderr)
        return 1 if unexpected else 0
    return 1 if diff.regressed else 0


def changed_checks(path: str) -> set[str]:
    """The check ids of a --changed file: one per line, each followed by ``# why`` if wanted; blank lines and lines
    starting with ``#`` are skipped."""
    ids = set()
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        nodeid = line.split(" #", 1)[0].strip()
        if nodeid and not nodeid.startswith("#"):
            ids.add(nodeid)
    return ids


def _merge(args: argparse.Namespace) -> int:
    from pytest_lfm.report import render_markdown
    from pytest_lfm.report.compare import ReportError
    from pytest_lfm.report.merge import merge_files

    output = Path(args.output)
    if output.suffix != ".json":
        return _bad_input("merge", f"-o {output}: name a .json file (the Markdown is written beside it, as .md)")
    try:
        merged = merge_files(args.reports)
    except ReportError as exc:
        return _bad_input("merge", exc)
    output.parent.mkdir(parents=True, exist_ok=True)
    markdown = output.with_suffix(".md")
    output.write_text(json.dumps(merged, indent=2) + "\n")
    markdown.write_text(render_markdown(merged))
    counts = ", ".join(f"{n} {status}" for status, n in merged["summary"].items() if n)
    print(f"merged {len(merged['merged']['parts'])} reports ({len(merged['checks'])} checks: {counts}) into "
          f"{output} and {markdown}")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="pytest-lfm", description="pytest-lfm tools")
    commands = top.add_subparsers(dest="command", required=True)
    micro_p = commands.add_parser("micro", help="micro checkpoints (tiny trained LFM2 models)")
    micro_cmds = micro_p.add_subparsers(dest="micro_command", required=True)
    build_p = micro_cmds.add_parser("build", help="build (or find cached) micro checkpoints; prints their paths")
    build_p.add_argument("names", nargs="*", metavar="NAME", help="dense, moe, vl (default: all)")
    build_p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    build_p.add_argument("--force", action="store_true", help="rebuild even when cached")
    build_p.add_argument("-v", "--verbose", action="store_true", help="log training progress to stderr")
    build_p.set_defaults(func=_micro_build)
    verify_p = micro_cmds.add_parser("verify", help="greedy bf16 decode of every scripted turn with transformers")
    verify_p.add_argument("name", choices=micro.NAMES)
    verify_p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="device used if a build is needed")
    verify_p.add_argument("--json", action="store_true", help="print the result as JSON")
    verify_p.set_defaults(func=_micro_verify)
    compare_p = commands.add_parser("compare", help="compare two qualification reports (JSON from --lfm-report); "
                                    "prints Markdown, exits 1 when a check newly fails or latency got worse, "
                                    "2 on bad input")
    compare_p.add_argument("old", metavar="OLD.json")
    compare_p.add_argument("new", metavar="NEW.json")
    compare_p.add_argument("--threshold", type=float, default=0.05,
                           help="relative latency change worth listing (default 0.05 = 5%%)")
    compare_p.add_argument("--same-verdicts", action="store_true",
                           help="exit 1 when any check both reports hold has another verdict (replay vs its GPU run)")
    compare_p.add_argument("--changed", metavar="FILE", default=None,
                           help="with --same-verdicts: the check ids (one per line, '# why' after each) whose "
                           "verdict is known to differ, e.g. tests changed since the GPU run; any other change "
                           "exits 1, and a listed check that did not change exits 2")
    compare_p.add_argument("--min-overlap", type=_fraction, default=None, metavar="FRACTION",
                           help="exit 2 when the check ids both reports hold are fewer than this share of the "
                           f"smaller report's checks (default {SAME_VERDICTS_MIN_OVERLAP} with --same-verdicts, "
                           "otherwise only no check in common fails)")
    compare_p.set_defaults(func=_compare)
    merge_p = commands.add_parser("merge", help="merge the reports of one qualification run in parts (hosts, GPUs, "
                                  "one --lfm-model each) into one report; exits 2 on bad input or conflicting parts")
    merge_p.add_argument("reports", nargs="+", metavar="REPORT.json")
    merge_p.add_argument("-o", "--output", required=True, metavar="QUALIFICATION.json",
                         help="the merged report; its Markdown goes beside it (QUALIFICATION.md)")
    merge_p.set_defaults(func=_merge)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
