"""Per run of the fidelity check: the client's mean TTFT and TPOT beside the server's own (--enable-metrics), from
the reports the GPU host wrote.   python3 client-server.py host*/fidelity-*/report/*.json"""
import json
import sys

for path in sys.argv[1:]:
    report = json.load(open(path))
    for check in report["checks"]:
        fid = check["notes"].get("fidelity")
        if not fid:
            continue
        print(f"{path}: {check['status']}, judged: {fid['judged']}")
        print(f"  plain {fid['ratios']['ttft']:.3f} / {fid['ratios']['tpot']:.3f}, normalized "
              f"{fid['normalized_ratios'].get('ttft', float('nan')):.3f} / "
              f"{fid['normalized_ratios'].get('tpot', float('nan')):.3f} (TTFT / TPOT)")
        runs = [("ours", o["mean_ttft_ms"], o["mean_tpot_ms"], s) for o, s in zip(fid["ours"], fid["ours_server"])]
        runs += [("bench", b["mean_ttft_ms"], b["mean_tpot_ms"], s)
                 for b, s in zip(fid["bench_serving"], fid["bench_serving_server"])]
        ratios = {who: [(t / s["ttft_ms"], p / s["itl_ms"]) for w, t, p, s in runs if w == who and s]
                  for who in ("ours", "bench")}
        if ratios["ours"] and ratios["bench"]:
            mean = {who: [sum(x[i] for x in r) / len(r) for i in (0, 1)] for who, r in ratios.items()}
            print(f"  normalized over the runs with server figures: TTFT {mean['ours'][0] / mean['bench'][0]:.3f}, "
                  f"TPOT {mean['ours'][1] / mean['bench'][1]:.3f}")
        for who, ttft, tpot, server in runs:
            if server:
                print(f"  {who:5} TTFT {ttft:6.2f} ms / server {server['ttft_ms']:6.2f} = {ttft / server['ttft_ms']:.3f}"
                      f"   TPOT {tpot:.3f} ms / server ITL {server['itl_ms']:.3f} = {tpot / server['itl_ms']:.3f}")
            else:
                print(f"  {who:5} TTFT {ttft:6.2f} ms   TPOT {tpot:.3f} ms   (no server figures)")
