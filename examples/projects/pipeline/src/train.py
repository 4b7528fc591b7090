"""Fits y = w1*x1 + w2*x2 + b by batch gradient descent; writes checkpoint/model.json."""
import argparse
import csv
import json
import os

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=100)
parser.add_argument("--lr", type=float, default=0.05)
args = parser.parse_args()

with open("data/train.csv") as f:
    rows = [(float(r["x1"]), float(r["x2"]), float(r["y"])) for r in csv.DictReader(f)]
w1 = w2 = b = 0.0
n = len(rows)
for epoch in range(1, args.epochs + 1):
    g1 = g2 = gb = loss = 0.0
    for x1, x2, y in rows:
        err = w1 * x1 + w2 * x2 + b - y
        g1, g2, gb, loss = g1 + err * x1, g2 + err * x2, gb + err, loss + err * err
    w1, w2, b = w1 - args.lr * 2 * g1 / n, w2 - args.lr * 2 * g2 / n, b - args.lr * 2 * gb / n
    if epoch % max(1, args.epochs // 5) == 0 or epoch == args.epochs:
        print(f"epoch {epoch:4d}  loss {loss / n:.5f}", flush=True)
os.makedirs("checkpoint", exist_ok=True)
with open("checkpoint/model.json", "w") as f:
    json.dump({"w1": w1, "w2": w2, "b": b, "epochs": args.epochs, "lr": args.lr}, f, indent=2)
print(f"model: y = {w1:.3f}*x1 + {w2:.3f}*x2 + {b:.3f}")
