#!/usr/bin/env python3
"""Writes the benchmark tree: ~768 MiB in ~500 files, 2/3 JSON-like text
(compressible, not trivially), 1/3 random bytes. Deterministic (seeded).

usage: gen_tree.py DIR [TOTAL_MIB]
"""
import json
import os
import random
import sys

def main():
    root = sys.argv[1]
    total = int(sys.argv[2]) if len(sys.argv) > 2 else 768
    rng = random.Random(20261127)
    words = ["issuer", "tenant", "key", "trust", "override", "csaf", "publisher", "advisory",
             "vendor", "product", "status", "fixed", "affected", "severity", "critical", "score",
             "cve", "cpe", "purl", "audit", "created", "updated", "actor", "reason", "global"]
    nfiles = 500
    text_bytes = total * 1024 * 1024 * 2 // 3
    rand_bytes = total * 1024 * 1024 - text_bytes
    n_text = nfiles * 2 // 3
    n_rand = nfiles - n_text
    os.makedirs(root, exist_ok=True)
    for i in range(n_text):
        d = os.path.join(root, "docs", f"d{i % 17:02d}")
        os.makedirs(d, exist_ok=True)
        size = text_bytes // n_text
        with open(os.path.join(d, f"issuers-{i:04d}.json"), "w") as f:
            written = 0
            while written < size:
                rec = {
                    "_id": f"{rng.getrandbits(96):024x}",
                    "tenantId": rng.choice(["global", "tenant-a", "tenant-b", "tenant-c"]),
                    "displayName": " ".join(rng.choice(words) for _ in range(rng.randint(2, 5))),
                    "score": round(rng.random() * 10, 2),
                    "tags": [rng.choice(words) for _ in range(rng.randint(0, 4))],
                    "updatedAt": f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z",
                    "counter": rng.randint(0, 10**9),
                }
                line = json.dumps(rec) + "\n"
                f.write(line)
                written += len(line)
    for i in range(n_rand):
        d = os.path.join(root, "blobs")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"blob-{i:04d}.bin"), "wb") as f:
            f.write(os.urandom(rand_bytes // n_rand))

if __name__ == "__main__":
    main()
