#!/usr/bin/env python3
"""Prints coffer's wall time against a baseline's from bench/run.sh's
results file: medians, means, their ratios against a target, and coffer's
peak RSS.

usage: ratio.py RESULTS LABEL COFFER_NAME BASELINE_NAME TARGET
"""
import collections
import statistics
import sys

results, label, coffer, baseline, target = sys.argv[1:6]
runs = collections.defaultdict(list)
for line in open(results):
    *name, wall, rss = line.split()
    runs[" ".join(name)].append((float(wall), int(rss)))


def walls(name):
    return [w for w, _ in runs[name]]


c_med, b_med = statistics.median(walls(coffer)), statistics.median(walls(baseline))
c_mean, b_mean = statistics.mean(walls(coffer)), statistics.mean(walls(baseline))
rss = max(r for _, r in runs[coffer]) / 1024
print(
    f"{label}: coffer median {c_med:.2f} s, baseline median {b_med:.2f} s; "
    f"ratio {c_med / b_med:.2f}x medians, {c_mean / b_mean:.2f}x means (target <= {target}x); "
    f"coffer peak RSS {rss:.1f} MiB (target <= 64)"
)
