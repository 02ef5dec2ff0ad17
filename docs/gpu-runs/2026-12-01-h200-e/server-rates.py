"""2026-12-01-h200-e: the server's own decode rate during each diagnostic run, beside what each client measured.

sglang logs a "Decode batch" line every 40 decode steps with its "gen throughput (token/s)"; the runs are the
clusters of such lines (a gap of more than 4 s between two runs: bench_serving's start, the flush's 1 s sleep).
At concurrency 1, 1000 / throughput is the server's time per output token in that window. The first six clusters
are h-diag's six runs (diag.jsonl, same order); the rest are the fidelity check that the end of the GPU time cut off.
Usage: python3 server-rates.py h-diag/server.log.gz h-diag/diag.jsonl"""
import datetime
import gzip
import json
import re
import statistics
import sys

LINE = re.compile(r"\[(\S+ \S+)\] Decode batch, #running-req: (\d+).*gen throughput \(token/s\): ([\d.]+)")
rows = []
with gzip.open(sys.argv[1], "rt") as log:
    for text in log:
        m = LINE.match(text)
        if m and int(m.group(2)) == 1 and float(m.group(3)) > 50:  # c1 steps; the first line of a run reads ~1
            t = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp()
            rows.append((t, float(m.group(3))))
clusters = [[rows[0]]]
for row in rows[1:]:
    if row[0] - clusters[-1][-1][0] > 4:
        clusters.append([])
    clusters[-1].append(row)
with open(sys.argv[2]) as diag:
    runs = [json.loads(line) for line in diag]
print("| run | client | client mean TPOT ms | server ms/token (log) | client / server |")
print("|---|---|---|---|---|")
for i, cluster in enumerate(clusters):
    server = statistics.mean(1000 / thr for _, thr in cluster)
    start = datetime.datetime.fromtimestamp(cluster[0][0]).strftime("%H:%M:%S")
    if i < len(runs):
        run = runs[i]
        print(f"| {i} ({start}) | {run['side']} | {run['mean_tpot_ms']:.3f} | {server:.3f} | "
              f"{run['mean_tpot_ms'] / server:.3f} |")
    else:
        print(f"| {i} ({start}) | fidelity check (cut off) | | {server:.3f} | |")
