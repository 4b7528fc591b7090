"""Scores checkpoint/model.json on data/test.csv; writes metrics/metrics.json."""
import csv
import json
import os

with open("checkpoint/model.json") as f:
    m = json.load(f)
with open("data/test.csv") as f:
    rows = [(float(r["x1"]), float(r["x2"]), float(r["y"])) for r in csv.DictReader(f)]
mse = sum((m["w1"] * x1 + m["w2"] * x2 + m["b"] - y) ** 2 for x1, x2, y in rows) / len(rows)
os.makedirs("metrics", exist_ok=True)
with open("metrics/metrics.json", "w") as f:
    json.dump({"mse": round(mse, 6), "test_rows": len(rows)}, f)
print(f"test MSE {mse:.5f} on {len(rows)} rows")
