#!/usr/bin/python3
"""Reference fixtures for libs/ml's LightGBM runtime (ml.LoadLightGBM).

Trains small LightGBM models with the lightgbm Python package, saves each
as LightGBM's text model (Booster.save_model), and writes what LightGBM
itself predicts for held-back rows, so that the Go runtime can be checked
against it without Python:

  binary      breast cancer (sklearn), objective binary, NaNs in training
              (missing type NaN, learned default directions)
  multiclass  wine (sklearn), multiclass, 3 classes (trees interleaved)
  regression  diabetes (sklearn), regression (L2); NaNs in training in
              half of the features only, so the others have missing type
              None and take a NaN as 0
  zero        synthetic, most values exactly 0, zero_as_missing=True
              (missing type Zero), binary with sigmoid 0.5
  nomissing   synthetic, use_missing=False (missing type None everywhere),
              poisson (prediction exp(raw score))
  rf          diabetes, boosting rf (average_output), regression
  dart        wine, boosting dart, multiclass
  deep        synthetic, binary, num_leaves 200 and no depth limit: trees
              deeper than the compiled predictor's fixed-step walk
  quantile    diabetes, quantile regression (alpha 0.8)

Every model starts from the average (boost_from_average, LightGBM's
default), which LightGBM folds into the first trees' leaf values.

After the held-back rows come edge rows: held-back rows with one feature
set exactly on a split threshold and one float64 step either side of it,
and with values LightGBM treats specially: 0, -0, values within and just
outside kZeroThreshold (the float32 1e-35, which LightGBM's dense predictor
takes as 0), NaN and infinities.

Two more models are written without predictions, for the runtime to refuse:
categorical (a categorical split) and linear (linear_tree=True).

For each case NAME the output folder gets NAME.txt (the model) and
NAME.expect.json:

  {"lightgbm": "4.6.0", "objective": "binary", "num_feature": p,
   "num_output": k,
   "rows": [[x, null, "inf", ...], ...],  # null = NaN, "inf"/"-inf"
   "raw": [[...], ...],                   # Booster.predict(raw_score=True)
   "output": [[...], ...]}                # Booster.predict()

Everything is seeded and trained on one thread (deterministic=True), so a
rerun with the same lightgbm gives the same bytes (lightgbm_test.go checks
that when it can run this script).

Usage: python3 scripts/lightgbm_fixtures.py [--out DIR] [--rows N]
(default DIR: libs/ml/testdata/lightgbm; N: held-back rows per case, 100).
The lightgbm package must be importable (PYTHONPATH); Debian has none.
"""

import argparse
import json
import math
import os

import lightgbm as lgb
import numpy as np
from sklearn import datasets
from sklearn.model_selection import train_test_split

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = 20240517
ZERO = float(np.float32(1e-35))  # LightGBM's kZeroThreshold

COMMON = {
    "num_threads": 1,
    "deterministic": True,
    "force_row_wise": True,
    "seed": SEED,
    "verbosity": -1,
}


def with_nans(rng, x, frac=0.10, cols=None):
    x = x.astype(np.float64).copy()
    mask = rng.random(x.shape) < frac
    if cols is not None:
        keep = np.zeros(x.shape[1], dtype=bool)
        keep[cols] = True
        mask &= keep[None, :]
    x[mask] = np.nan
    return x


def sparse_data(rng, n=3000, p=6):
    x = rng.normal(size=(n, p))
    x[rng.random(x.shape) < 0.6] = 0.0
    z = x[:, 0] - 0.8 * x[:, 1] + np.where(x[:, 2] == 0, 1.0, -0.5) + 0.5 * x[:, 3] * x[:, 4]
    z += 0.3 * rng.normal(size=n)
    return x, (z > 0.3).astype(np.float64)


def count_data(rng, n=3000, p=5):
    x = rng.normal(size=(n, p))
    lam = np.exp(0.4 * x[:, 0] - 0.3 * x[:, 1] + 0.2 * x[:, 2] * x[:, 3])
    return x, rng.poisson(lam).astype(np.float64)


def deep_data(rng, n=4000, p=6):
    x = rng.normal(size=(n, p))
    z = np.sin(3 * x[:, 0]) + x[:, 1] * x[:, 2] - 0.5 * x[:, 3] ** 2 + 0.3 * rng.normal(size=n)
    x = with_nans(rng, x, 0.05)
    return x, (z > 0).astype(np.float64)


def splits(booster):
    """(feature, threshold) of every numerical split."""
    out = []

    def walk(node):
        if "split_index" not in node:
            return
        if node["decision_type"] == "<=":
            out.append((node["split_feature"], float(node["threshold"])))
        walk(node["left_child"])
        walk(node["right_child"])

    for tree in booster.dump_model()["tree_info"]:
        walk(tree["tree_structure"])
    return out


SPECIAL = [0.0, -0.0, 1e-40, -1e-40, ZERO, -ZERO, math.nextafter(ZERO, math.inf),
           math.nextafter(-ZERO, -math.inf), 5e-324, math.nan, math.inf, -math.inf]


def edge_rows(rng, booster, base_rows, count):
    """Rows with one feature on or one float64 step from a threshold, or a
    value LightGBM treats specially."""
    cuts = splits(booster)
    rows = []
    for _ in range(count):
        row = base_rows[rng.integers(len(base_rows))].copy()
        if rng.random() < 0.7 and cuts:
            j, thr = cuts[rng.integers(len(cuts))]
            step = rng.integers(3)
            row[j] = thr if step == 0 else math.nextafter(thr, math.inf if step == 1 else -math.inf)
        else:
            for _ in range(rng.integers(1, 4)):
                row[rng.integers(len(row))] = SPECIAL[rng.integers(len(SPECIAL))]
        rows.append(row)
    return np.array(rows)


def cell(v):
    v = float(v)
    if math.isnan(v):
        return None
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def write_case(out, name, booster, test, num_output, rng):
    x = np.vstack([test, edge_rows(rng, booster, test, 60)])
    raw = booster.predict(x, raw_score=True)
    pred = booster.predict(x)
    raw = raw.reshape(len(x), num_output)
    pred = pred.reshape(len(x), -1)
    booster.save_model(os.path.join(out, name + ".txt"))
    doc = {
        "lightgbm": lgb.__version__,
        "objective": booster.params["objective"],
        "num_feature": booster.num_feature(),
        "num_output": num_output,
        "rows": [[cell(v) for v in r] for r in x],
        "raw": [[float(v) for v in r] for r in raw],
        "output": [[float(v) for v in r] for r in pred],
    }
    with open(os.path.join(out, name + ".expect.json"), "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")


def train(params, x, y, rounds, **kw):
    p = dict(COMMON)
    p.update(params)
    return lgb.train(p, lgb.Dataset(x, y, params={"verbosity": -1}, **kw), num_boost_round=rounds)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(REPO, "libs", "ml", "testdata", "lightgbm"))
    ap.add_argument("--rows", type=int, default=100)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(SEED)
    n = args.rows

    def split(x, y):
        return train_test_split(x, y, test_size=n, random_state=SEED)

    # binary: NaNs everywhere, missing type NaN.
    x, y = datasets.load_breast_cancer(return_X_y=True)
    x = with_nans(rng, x)
    xtr, xte, ytr, _ = split(x, y)
    b = train({"objective": "binary", "num_leaves": 15, "learning_rate": 0.1}, xtr, ytr, 60)
    write_case(args.out, "binary", b, xte, 1, rng)

    # multiclass: 3 classes.
    x, y = datasets.load_wine(return_X_y=True)
    x = with_nans(rng, x)
    xtr, xte, ytr, _ = split(x, y)
    b = train({"objective": "multiclass", "num_class": 3, "num_leaves": 7, "learning_rate": 0.1,
               "min_data_in_leaf": 5}, xtr, ytr, 40)
    write_case(args.out, "multiclass", b, xte, 3, rng)

    # regression: NaNs in training in features 0-4 only; NaNs in the
    # held-back rows everywhere.
    x, y = datasets.load_diabetes(return_X_y=True)
    xtr, xte, ytr, _ = split(x, y)
    xtr = with_nans(rng, xtr, cols=[0, 1, 2, 3, 4])
    xte = with_nans(rng, xte)
    b = train({"objective": "regression", "num_leaves": 15, "learning_rate": 0.05}, xtr, ytr, 80,
              feature_name=[f"d{j}" for j in range(x.shape[1])])
    write_case(args.out, "regression", b, xte, 1, rng)

    # zero: zero_as_missing, binary with sigmoid 0.5.
    x, y = sparse_data(rng)
    x[rng.random(x.shape) < 0.05] = np.nan
    xtr, xte, ytr, _ = split(x, y)
    b = train({"objective": "binary", "sigmoid": 0.5, "zero_as_missing": True, "num_leaves": 15,
               "learning_rate": 0.1}, xtr, ytr, 60)
    write_case(args.out, "zero", b, xte, 1, rng)

    # nomissing: use_missing=False, poisson.
    x, y = count_data(rng)
    xtr, xte, ytr, _ = split(x, y)
    xte = with_nans(rng, xte)
    b = train({"objective": "poisson", "use_missing": False, "num_leaves": 15,
               "learning_rate": 0.1}, xtr, ytr, 50)
    write_case(args.out, "nomissing", b, xte, 1, rng)

    # rf: random forest, average_output.
    x, y = datasets.load_diabetes(return_X_y=True)
    x = with_nans(rng, x)
    xtr, xte, ytr, _ = split(x, y)
    b = train({"objective": "regression", "boosting": "rf", "bagging_fraction": 0.7, "bagging_freq": 1,
               "feature_fraction": 0.8, "num_leaves": 31}, xtr, ytr, 30)
    write_case(args.out, "rf", b, xte, 1, rng)

    # dart: multiclass.
    x, y = datasets.load_wine(return_X_y=True)
    x = with_nans(rng, x)
    xtr, xte, ytr, _ = split(x, y)
    b = train({"objective": "multiclass", "num_class": 3, "boosting": "dart", "num_leaves": 7,
               "learning_rate": 0.2, "min_data_in_leaf": 5, "drop_seed": SEED}, xtr, ytr, 30)
    write_case(args.out, "dart", b, xte, 3, rng)

    # deep: leaf-wise without a depth limit.
    x, y = deep_data(rng)
    xtr, xte, ytr, _ = split(x, y)
    b = train({"objective": "binary", "num_leaves": 200, "max_depth": -1, "min_data_in_leaf": 2,
               "learning_rate": 0.1}, xtr, ytr, 10)
    write_case(args.out, "deep", b, xte, 1, rng)

    # quantile regression.
    x, y = datasets.load_diabetes(return_X_y=True)
    x = with_nans(rng, x)
    xtr, xte, ytr, _ = split(x, y)
    b = train({"objective": "quantile", "alpha": 0.8, "num_leaves": 15, "learning_rate": 0.1}, xtr, ytr, 40)
    write_case(args.out, "quantile", b, xte, 1, rng)

    # Models the runtime refuses.
    x = rng.normal(size=(600, 3))
    x[:, 0] = rng.integers(0, 6, size=600)
    y = (np.isin(x[:, 0], [1, 4]) ^ (x[:, 1] > 0)).astype(np.float64)
    b = train({"objective": "binary", "num_leaves": 7, "min_data_per_group": 5, "cat_smooth": 1},
              x, y, 5, categorical_feature=[0])
    b.save_model(os.path.join(args.out, "categorical.txt"))
    b = train({"objective": "regression", "linear_tree": True, "num_leaves": 4}, x[:, 1:], x[:, 1] * 2 + x[:, 2], 5)
    b.save_model(os.path.join(args.out, "linear.txt"))


if __name__ == "__main__":
    main()
