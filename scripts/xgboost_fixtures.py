#!/usr/bin/python3
"""Reference fixtures for libs/ml's XGBoost runtime (ml.LoadXGBoost).

Trains small XGBoost models with Debian's python3-xgboost, saves each as
XGBoost JSON (.json) and Universal Binary JSON (.ubj), and writes what
XGBoost itself predicts for held-back rows, so that the Go runtime can be
checked against it without Python:

  binary      breast cancer (sklearn), binary:logistic, exact, base_score 0.3
  multiclass  wine (sklearn), multi:softprob, 3 classes, hist,
              num_parallel_tree 2 (trees interleaved by class)
  regression  diabetes (sklearn), reg:squarederror, approx: margins near 150,
              where float32 sums differ from float64 ones
  lossguide   synthetic, binary:logistic, hist, lossguide, max_leaves 160 and
              no depth limit: trees deeper than the fixed-step walk

10% of the values of every data set are NaN (missing), in training and in
the held-back rows, so the trees learn default directions. After the
held-back rows come edge rows: a held-back row with one feature set exactly
on a split condition, one float64 step either side of it, on the midpoint
between the condition and the float32 below it, and one step either side of
that midpoint, where XGBoost's rounding of the input to float32 decides the
branch.

For each case NAME the output folder gets NAME.json, NAME.ubj (the model) and
NAME.expect.json:

  {"xgboost": "1.7.4", "objective": ..., "num_feature": p, "num_output": k,
   "rows": [[x, null, ...], ...],      # null = NaN (missing)
   "margin": [[...], ...],             # Booster.predict(output_margin=True)
   "output": [[...], ...]}             # Booster.predict() (probabilities or values)

Everything is seeded and trained on one thread, so a rerun with the same
xgboost gives the same bytes (xgboost_test.go checks that when it can run
this script).

Usage: /usr/bin/python3 scripts/xgboost_fixtures.py [--out DIR] [--rows N]
(default DIR: libs/ml/testdata/xgboost; N: held-back rows per case, 100).
"""

import argparse
import json
import math
import os

import numpy as np
import xgboost as xgb
from sklearn import datasets
from sklearn.model_selection import train_test_split

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = 20240516


def with_nans(rng, x, frac=0.10):
    x = x.astype(np.float64).copy()
    x[rng.random(x.shape) < frac] = np.nan
    return x


def lossguide_data(rng, n=4000, p=6):
    x = rng.normal(size=(n, p))
    z = np.sin(3 * x[:, 0]) + x[:, 1] * x[:, 2] - 0.5 * x[:, 3] ** 2 + 0.3 * rng.normal(size=n)
    return x, (z > 0).astype(np.float64)


def splits(booster):
    """(feature, split condition as float32) of every split node."""
    doc = json.loads(booster.save_raw("json").decode())
    out = []
    for tree in doc["learner"]["gradient_booster"]["model"]["trees"]:
        for i, left in enumerate(tree["left_children"]):
            if left != -1:
                out.append((tree["split_indices"][i], np.float32(tree["split_conditions"][i])))
    return out


def edge_rows(rng, booster, base_rows, count):
    """Rows whose one feature sits on, or within float32 rounding of, a split."""
    cuts = splits(booster)
    pick = rng.choice(len(cuts), size=min(count, len(cuts)), replace=False)
    rows = []
    for k in pick:
        feat, c = cuts[k]
        below = np.nextafter(c, np.float32(-np.inf))
        c64 = float(c)
        mid = (float(below) + c64) / 2  # exact in float64
        values = [c64, np.nextafter(c64, -math.inf), np.nextafter(c64, math.inf),
                  mid, np.nextafter(mid, -math.inf), np.nextafter(mid, math.inf)]
        base = base_rows[rng.integers(len(base_rows))]
        for v in values:
            r = base.copy()
            r[feat] = v
            rows.append(r)
    return np.array(rows)


def cell(v):
    v = float(v)
    return None if math.isnan(v) else v


def write_case(out, name, booster, x_test, rng, num_output):
    booster.save_model(os.path.join(out, name + ".json"))
    booster.save_model(os.path.join(out, name + ".ubj"))
    x = np.vstack([x_test, edge_rows(rng, booster, x_test, 16)])
    d = xgb.DMatrix(x, missing=np.nan)
    margin = booster.predict(d, output_margin=True, strict_shape=True)
    output = booster.predict(d, strict_shape=True)
    doc = {
        "xgboost": xgb.__version__,
        "objective": json.loads(booster.save_config())["learner"]["objective"]["name"],
        "num_feature": int(x.shape[1]),
        "num_output": num_output,
        "rows": [[cell(v) for v in r] for r in x],
        "margin": [[float(v) for v in r] for r in margin],
        "output": [[float(v) for v in r] for r in output],
    }
    with open(os.path.join(out, name + ".expect.json"), "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(REPO, "libs", "ml", "testdata", "xgboost"))
    ap.add_argument("--rows", type=int, default=100, help="held-back rows per case")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(SEED)
    common = {"nthread": 1, "seed": SEED}

    def split(x, y):
        x = with_nans(rng, x)
        xtr, xte, ytr, _ = train_test_split(x, y, test_size=0.25, random_state=SEED)
        return xtr, ytr, xte[: args.rows]

    # Binary: exact greedy splits, a base_score other than 0.5.
    bc = datasets.load_breast_cancer()
    xtr, ytr, xte = split(bc.data, bc.target)
    b = xgb.train({**common, "objective": "binary:logistic", "tree_method": "exact", "max_depth": 4,
                   "eta": 0.3, "base_score": 0.3}, xgb.DMatrix(xtr, label=ytr, missing=np.nan), 30)
    write_case(args.out, "binary", b, xte, rng, 1)

    # Multiclass: hist, two parallel trees per class per round, subsampled.
    wine = datasets.load_wine()
    xtr, ytr, xte = split(wine.data, wine.target)
    m = xgb.train({**common, "objective": "multi:softprob", "num_class": 3, "tree_method": "hist",
                   "max_depth": 3, "eta": 0.3, "num_parallel_tree": 2, "subsample": 0.8,
                   "colsample_bynode": 0.8}, xgb.DMatrix(xtr, label=ytr, missing=np.nan), 10)
    write_case(args.out, "multiclass", m, xte, rng, 3)

    # Regression: approx, targets 25..346, so margins are large.
    diab = datasets.load_diabetes()
    xtr, ytr, xte = split(diab.data, diab.target)
    r = xgb.train({**common, "objective": "reg:squarederror", "tree_method": "approx", "max_depth": 4,
                   "eta": 0.1}, xgb.DMatrix(xtr, label=ytr, missing=np.nan), 60)
    write_case(args.out, "regression", r, xte, rng, 1)

    # Deep leaf-wise trees.
    x, y = lossguide_data(rng)
    xtr, ytr, xte = split(x, y)
    lg = xgb.train({**common, "objective": "binary:logistic", "tree_method": "hist",
                    "grow_policy": "lossguide", "max_depth": 0, "max_leaves": 160, "eta": 0.2,
                    "min_child_weight": 0.1}, xgb.DMatrix(xtr, label=ytr, missing=np.nan), 6)
    write_case(args.out, "lossguide", lg, xte, rng, 1)


if __name__ == "__main__":
    main()
