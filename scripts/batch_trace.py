#!/usr/bin/env python3
# Reads a BENCH_TRACE CSV (send time µs, latency µs of one subscriber's deliveries) and reports how
# many messages each batch frame held and how long its oldest message waited beyond the window.
# Usage: BENCH_TRACE=/tmp/t.csv scripts/bench.sh --only batch --windows 25 --rate 1000; python3 scripts/batch_trace.py /tmp/t.csv 25
import sys, statistics
# BENCH_TRACE csv: send_time_us, latency_us for one subscriber's deliveries
rows=[tuple(map(int,l.split(','))) for l in open(sys.argv[1]) if l.strip()]
window=float(sys.argv[2])*1000
rows.sort()
# arrival = send + latency; deliveries of one batch frame share an arrival time (within 300 us)
arr=sorted((t+l, t, l) for t,l in rows)
batches=[]; cur=[arr[0]]
for a in arr[1:]:
    if a[0]-cur[-1][0] <= 300: cur.append(a)
    else: batches.append(cur); cur=[a]
batches.append(cur)
first=[max(x[2] for x in b) for b in batches]   # the batch's oldest message: its wait = window + overhead
size=[len(b) for b in batches]
lat=[l for _,l in rows]
q=lambda v,p: sorted(v)[int(p*(len(v)-1))]/1000
print(f"deliveries {len(rows)}, frames {len(batches)}, messages/frame {statistics.mean(size):.1f}")
print(f"latency p50 {q(lat,.5):.1f} ms, p99 {q(lat,.99):.1f} ms")
print(f"oldest message of each frame: p50 {q(first,.5):.1f} ms, p99 {q(first,.99):.1f} ms -> beyond the window: p50 {q(first,.5)-window/1000:.1f} ms")
# gap between a frame's oldest message send and the previous frame's arrival: how long after the previous flush the window opened
