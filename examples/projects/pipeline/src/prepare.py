"""Writes data/train.csv and data/test.csv: y = 3*x1 - 2*x2 + 0.5 + noise."""
import csv
import os
import random

random.seed(int(os.environ.get("SEED", "7")))
samples = int(os.environ.get("SAMPLES", "2000"))
os.makedirs("data", exist_ok=True)
rows = []
for _ in range(samples):
    x1, x2 = random.uniform(-1, 1), random.uniform(-1, 1)
    rows.append((x1, x2, 3 * x1 - 2 * x2 + 0.5 + random.gauss(0, 0.1)))
split = int(samples * 0.8)
for name, part in (("train", rows[:split]), ("test", rows[split:])):
    with open(f"data/{name}.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["x1", "x2", "y"])
        writer.writerows(part)
print(f"wrote {split} training and {samples - split} test rows")
