"""An in-memory analytics job whose working set grows and shrinks: each
phase loads a table of records, indexes it, answers queries against the
index, then drops both. Phase sizes go 0.25 -> 1.3 GB and back."""
import random
import sys
import time

PHASES = [  # (rows, queries)
    (1_000_000, 12_000_000),
    (4_000_000, 10_000_000),
    (500_000, 16_000_000),
    (6_000_000, 8_000_000),
    (2_000_000, 12_000_000),
]


def phase(rows, queries):
    t0 = time.time()
    table = [(i, i * 2654435761 % 1000003, "k%09d" % i) for i in range(rows)]
    index = {}
    for rec in table:
        index.setdefault(rec[1] % 50021, []).append(rec)
    rnd = random.Random(rows)
    hits = 0
    for _ in range(queries):
        hits += len(index.get(rnd.randrange(50021), ()))
    del index, table
    print(f"phase rows={rows} queries={queries} hits={hits} {time.time() - t0:.1f}s", flush=True)


scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
for rows, queries in PHASES:
    phase(int(rows * scale), int(queries * scale))
