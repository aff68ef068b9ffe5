#!/usr/bin/env python3
"""An external trainer for Gyre's `algorithm: command` (see docs/loop.md).

Gyre runs it with the training window in GYRE_TRAIN_CSV (the model's inputs,
already through the pipeline's feature transforms, then the label as a class
name) and reads back a linear classifier from GYRE_MODEL_OUT. This one fits a
multinomial logistic regression with L2 by batch gradient descent, in plain
Python so that it runs anywhere python3 does; swap in scikit-learn's
LogisticRegression (coef_, intercept_) for real work.

Parameters (spec.model.params, in GYRE_PARAMS): l2 (default 1e-3),
iterations (default 300), learningRate (default 0.5).
"""
import csv
import json
import math
import os
import sys


def main():
    params = json.loads(os.environ.get("GYRE_PARAMS") or "{}") or {}
    l2 = float(params.get("l2", 1e-3))
    iterations = int(params.get("iterations", 300))
    lr = float(params.get("learningRate", 0.5))
    features = os.environ["GYRE_FEATURES"].split(",")
    classes = os.environ["GYRE_CLASSES"].split(",")
    label = os.environ["GYRE_LABEL"]

    xs, ys = [], []
    with open(os.environ["GYRE_TRAIN_CSV"], newline="") as f:
        reader = csv.DictReader(f)
        for row in reader:
            x = []
            for name in features:
                v = float(row[name])
                x.append(0.0 if math.isnan(v) else v)
            xs.append(x)
            ys.append(classes.index(row[label]))
    if not xs:
        sys.exit("no training rows")
    n, d, k = len(xs), len(features), len(classes)

    # Standardise, fit, then fold the scaling back into the coefficients.
    mean = [sum(x[j] for x in xs) / n for j in range(d)]
    std = [math.sqrt(sum((x[j] - mean[j]) ** 2 for x in xs) / n) or 1.0 for j in range(d)]
    zs = [[(x[j] - mean[j]) / std[j] for j in range(d)] for x in xs]
    w = [[0.0] * d for _ in range(k)]
    b = [0.0] * k
    for _ in range(iterations):
        gw = [[0.0] * d for _ in range(k)]
        gb = [0.0] * k
        for z, y in zip(zs, ys):
            scores = [b[c] + sum(w[c][j] * z[j] for j in range(d)) for c in range(k)]
            top = max(scores)
            exps = [math.exp(s - top) for s in scores]
            total = sum(exps)
            for c in range(k):
                err = exps[c] / total - (1.0 if c == y else 0.0)
                gb[c] += err
                for j in range(d):
                    gw[c][j] += err * z[j]
        for c in range(k):
            b[c] -= lr * gb[c] / n
            for j in range(d):
                w[c][j] -= lr * (gw[c][j] / n + l2 * w[c][j])

    coef = [[w[c][j] / std[j] for j in range(d)] for c in range(k)]
    intercept = [b[c] - sum(w[c][j] * mean[j] / std[j] for j in range(d)) for c in range(k)]
    if k == 2:  # one row: the score of classes[1] over classes[0]
        coef = [[coef[1][j] - coef[0][j] for j in range(d)]]
        intercept = [intercept[1] - intercept[0]]
    with open(os.environ["GYRE_MODEL_OUT"], "w") as f:
        json.dump({"format": "gyre.linear/v1", "features": features, "classes": classes,
                   "coefficients": coef, "intercepts": intercept}, f)


if __name__ == "__main__":
    main()
