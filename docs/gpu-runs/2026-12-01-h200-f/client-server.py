"""Per run of the fidelity check: the client's mean TTFT and TPOT beside the server's own (--enable-metrics), from
the reports the GPU host wrote.   python3 client-server.py host*/fidelity-*/report/*.json"""
import json
import sys
from pathlib import Path


def ratio(run: tuple[str, float, float, dict | None], i: int) -> float:
    _, ttft, tpot, server = run
    assert server
    return ttft / server["ttft_ms"] if i == 0 else tpot / server["itl_ms"]


for path in sys.argv[1:]:
    for check in json.loads(Path(path).read_text())["checks"]:
        fid = check["notes"].get("fidelity")
        if not fid:
            continue
        norm = fid["normalized_ratios"]
        print(f"{path}: {check['status']}, judged: {fid['judged']}")
        print(f"  plain {fid['ratios']['ttft']:.3f} / {fid['ratios']['tpot']:.3f}, normalized "
              f"{norm.get('ttft', float('nan')):.3f} / {norm.get('tpot', float('nan')):.3f} (TTFT / TPOT)")
        runs = [("ours", o["mean_ttft_ms"], o["mean_tpot_ms"], s)
                for o, s in zip(fid["ours"], fid["ours_server"], strict=True)]
        runs += [("bench", b["mean_ttft_ms"], b["mean_tpot_ms"], s)
                 for b, s in zip(fid["bench_serving"], fid["bench_serving_server"], strict=True)]
        with_figures = {who: [r for r in runs if r[0] == who and r[3]] for who in ("ours", "bench")}
        if all(with_figures.values()):
            mean = {who: [sum(ratio(r, i) for r in rs) / len(rs) for i in (0, 1)] for who, rs in with_figures.items()}
            print(f"  normalized over the runs with server figures: TTFT {mean['ours'][0] / mean['bench'][0]:.3f}, "
                  f"TPOT {mean['ours'][1] / mean['bench'][1]:.3f}")
        for run in runs:
            who, ttft, tpot, server = run
            if server:
                print(f"  {who:5} TTFT {ttft:6.2f} ms / server {server['ttft_ms']:6.2f} = {ratio(run, 0):.3f}   "
                      f"TPOT {tpot:.3f} ms / server ITL {server['itl_ms']:.3f} = {ratio(run, 1):.3f}")
            else:
                print(f"  {who:5} TTFT {ttft:6.2f} ms   TPOT {tpot:.3f} ms   (no server figures)")
