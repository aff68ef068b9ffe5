#!/usr/bin/env python3
"""Train Gyre's `mlp` model with PyTorch, on a GPU when there is one.

It writes a gyre.model/v1 artifact (docs/ml.md) that Gyre loads, versions
and serves like an mlp it trained itself: same parameters, same input
encoding (standardised inputs, missing values at the training mean), same
layer layout, and the checksum computed exactly as libs/ml/artifact.go
computes it. The algorithm mirrors libs/ml/mlp_train.go (and scikit-learn's
MLPClassifier with solver="adam"): Glorot-uniform initialisation, Adam on
shuffled minibatches, an L2 penalty l2/(2·batch)·‖W‖² per step, stopping
after `epochs` or when `nIterNoChange` epochs fail to improve the training
(or, with earlyStopping, the validation) loss by more than `tol`.

Two ways to run it:

  * As an external trainer for a pipeline (`algorithm: command`, see
    docs/loop.md), so that a `gpu` worker pool can train the model:

        model:
          algorithm: command
          command: [python3, examples/torch/train.py]
          params: {hidden: [64, 32], epochs: 50}
          pool: gpu

    It reads the window from GYRE_TRAIN_CSV (GYRE_FEATURES, GYRE_LABEL,
    GYRE_CLASSES, GYRE_PARAMS, GYRE_SEED) and writes the artifact to
    GYRE_MODEL_OUT.

  * Standalone, on a CSV file of numeric features:

        python3 examples/torch/train.py --data train.csv --label class \\
            --param hidden=64,32 --param epochs=50 --out model.json

    --predict FILE --predict-out OUT also writes the model's outputs on FILE
    (class probabilities, or values for regression) as JSON, computed in
    float64 from the exported weights: what Gyre's Go code must reproduce.

The device is CUDA when available, else the CPU (override with --device or
GYRE_TORCH_DEVICE). Training runs in float32 unless --dtype float64; the
artifact stores the trained weights as float64 either way.
"""
import argparse
import csv
import decimal
import hashlib
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

FORMAT = "gyre.model/v1"

# The mlp parameters of libs/ml/mlp.go with their defaults; the artifact
# carries the full set, as Go writes it.
DEFAULTS = {
    "activation": "relu",
    "batchSize": 200,
    "earlyStopping": False,
    "epochs": 200,
    "hidden": [100],
    "l2": 1e-4,
    "learningRate": 0.001,
    "nIterNoChange": 10,
    "tol": 1e-4,
    "validationFraction": 0.1,
}

MISSING = {"", "na", "n/a", "nan", "null", "none", "?"}


class UsageError(Exception):
    pass


# ---------------------------------------------------------------------------
# Parameters


def parse_params(raw):
    """Validates params like libs/ml/params.go and fills in the defaults."""
    out = dict(DEFAULTS)
    for k, v in raw.items():
        if k not in DEFAULTS:
            raise UsageError("mlp param %r: unknown param (known: %s)" % (k, ", ".join(sorted(DEFAULTS))))
        out[k] = v

    def integer(k, lo, hi, v=None):
        v = out[k] if v is None else v
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) or not lo <= v <= hi:
            raise UsageError("mlp param %r: must be an integer in [%d, %d], got %r" % (k, lo, hi, v))
        return int(v)

    def number(k, lo, hi, lo_open=False):
        v = out[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < lo or v > hi or (lo_open and v == lo):
            raise UsageError("mlp param %r: must be a number in %s%g, %g], got %r" % (k, "(" if lo_open else "[", lo, hi, v))
        return float(v)

    hidden = out["hidden"]
    if isinstance(hidden, str):
        text = hidden.strip().lstrip("[").rstrip("]").strip()
        try:
            hidden = [int(x) for x in text.split(",")] if text else []
        except ValueError:
            raise UsageError('mlp param "hidden": must be a list of integers such as "64,32", got %r' % out["hidden"])
    elif isinstance(hidden, (int, float)) and not isinstance(hidden, bool):
        hidden = [hidden]
    if not isinstance(hidden, list) or len(hidden) > 16:
        raise UsageError('mlp param "hidden": must be a list of at most 16 integers, got %r' % (out["hidden"],))
    out["hidden"] = [integer("hidden", 1, 1 << 16, h) for h in hidden]
    if out["activation"] not in ("relu", "tanh"):
        raise UsageError('mlp param "activation": must be one of relu, tanh, got %r' % (out["activation"],))
    out["learningRate"] = number("learningRate", 0, 10, lo_open=True)
    out["epochs"] = integer("epochs", 1, 10**6)
    out["batchSize"] = integer("batchSize", 1, 1 << 20)
    out["l2"] = number("l2", 0, math.inf)
    out["tol"] = number("tol", 0, 1)
    out["nIterNoChange"] = integer("nIterNoChange", 1, 100000)
    if not isinstance(out["earlyStopping"], bool):
        raise UsageError('mlp param "earlyStopping": must be a bool, got %r' % (out["earlyStopping"],))
    out["validationFraction"] = number("validationFraction", 0, 0.9, lo_open=True)
    return out


def cli_param(text):
    """k=v from the command line: JSON when it parses (numbers, true, [64,32]), else the string."""
    if "=" not in text:
        raise UsageError("--param %r: want name=value" % text)
    k, v = text.split("=", 1)
    try:
        return k.strip(), json.loads(v)
    except ValueError:
        return k.strip(), v


# ---------------------------------------------------------------------------
# Data


def parse_number(s, row, col):
    if s is None or s.strip().lower() in MISSING:
        return math.nan
    try:
        v = float(s.strip())
    except ValueError:
        raise UsageError("row %d, column %r: value %r is not a number (this trainer takes numeric inputs; "
                         "give text columns the pipeline's onehot transform)" % (row, col, s))
    if math.isinf(v):
        raise UsageError("row %d, column %r: value %r is not finite" % (row, col, s))
    return v


def go_class_name(s):
    """Go's canonicalClass: numbers in Go's shortest %g form, so "1.0" is "1"."""
    s = s.strip()
    try:
        v = float(s)
    except ValueError:
        return s
    if not math.isfinite(v) or "_" in s:
        return s
    return go_format_g(v)


def sorted_classes(names):
    """Go's sortedUnique(names, numericAware): by value when all are numbers."""
    u = sorted(set(names))
    try:
        nums = [float(x) for x in u]
    except ValueError:
        return u
    if any(math.isnan(x) for x in nums):
        return u
    return [x for _, x in sorted(zip(nums, u), key=lambda p: p[0])]


def read_table(path, label, features=None, task="classification", classes=None):
    """Reads a CSV: features (all but the label by default) and the label.
    With classes given (the command protocol's GYRE_CLASSES), labels are
    matched to them as written; otherwise they are normalised as Gyre's
    ReadCSV does and sorted into the class list."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise UsageError("%s: empty input: no header row" % path)
        if header:
            header[0] = header[0].lstrip("\ufeff")
        if label is not None and label not in header:
            raise UsageError("%s: column %r: label column not found (have %s)" % (path, label, ", ".join(header)))
        if features is None:
            features = [h for h in header if h != label]
        pos = {h: i for i, h in enumerate(header)}
        for name in features:
            if name not in pos:
                raise UsageError("%s: column %r: unknown feature column" % (path, name))
        xs, ys = [], []
        for row_no, rec in enumerate(reader, start=1):
            if len(rec) != len(header):
                raise UsageError("%s: row %d: wrong number of fields" % (path, row_no))
            xs.append([parse_number(rec[pos[name]], row_no, name) for name in features])
            if label is None:
                continue
            raw = rec[pos[label]]
            if raw.strip().lower() in MISSING:
                raise UsageError("%s: row %d, column %r: label is missing" % (path, row_no, label))
            if task == "regression":
                ys.append(parse_number(raw, row_no, label))
            else:
                ys.append(raw.strip() if classes is not None else go_class_name(raw))
    if not xs:
        raise UsageError("%s: no data rows" % path)
    if label is not None and task != "regression":
        if classes is None:
            classes = sorted_classes(ys)
        index = {c: i for i, c in enumerate(classes)}
        for i, c in enumerate(ys):
            if c not in index:
                raise UsageError("%s: row %d: class %r is not among the classes %s" % (path, i + 1, c, classes))
        ys = [index[c] for c in ys]
    return features, xs, ys, classes


def fit_scaler(xs):
    """Mean and population standard deviation of each column's observed
    values (libs/ml/scaler.go); a constant column gets scale 1."""
    means, scales = [], []
    for j in range(len(xs[0])):
        col = [r[j] for r in xs if not math.isnan(r[j])]
        mean = sum(col) / len(col) if col else 0.0
        sd = math.sqrt(sum((v - mean) ** 2 for v in col) / len(col)) if col else 0.0
        if not sd > 1e-12 * max(1.0, abs(mean)):
            sd = 1.0
        means.append(mean)
        scales.append(sd)
    return means, scales


def standardise(xs, means, scales, dtype):
    x = torch.tensor(xs, dtype=torch.float64)
    x = (x - torch.tensor(means, dtype=torch.float64)) / torch.tensor(scales, dtype=torch.float64)
    return torch.nan_to_num(x, nan=0.0).to(dtype)  # missing = the training mean


# ---------------------------------------------------------------------------
# Model and training


def build_net(sizes, activation):
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU() if activation == "relu" else torch.nn.Tanh())
    return torch.nn.Sequential(*layers)


def linear_layers(net):
    return [m for m in net if isinstance(m, torch.nn.Linear)]


def summed_loss(out, y, task, n_classes):
    """The summed loss of a batch and its per-row form, as mlp_train.go."""
    if task == "regression":
        return 0.5 * ((out[:, 0] - y) ** 2).sum()
    if n_classes == 2:
        return F.binary_cross_entropy_with_logits(out[:, 0], y, reduction="sum")
    return F.cross_entropy(out, y, reduction="sum")


def hold_out(ys, task, frac, gen):
    """A seeded hold-out of round(frac·n) rows per class (all rows for
    regression); both parts keep the row order."""
    n = len(ys)
    groups = {}
    if task == "regression":
        groups[0] = list(range(n))
    else:
        for i, y in enumerate(ys):
            groups.setdefault(y, []).append(i)
    held = [False] * n
    for key in sorted(groups):
        rows = groups[key]
        take = int(math.floor(frac * len(rows) + 0.5))
        for p in torch.randperm(len(rows), generator=gen)[:take].tolist():
            held[rows[p]] = True
    fit = [i for i in range(n) if not held[i]]
    val = [i for i in range(n) if held[i]]
    return fit, val


def train(xs, ys, task, classes, p, seed, device, dtype):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    n_classes = len(classes) if classes else 0
    outs = 1 if task == "regression" or n_classes == 2 else n_classes
    val_xs = val_ys = None
    if p["earlyStopping"]:
        fit, val = hold_out(ys, task, p["validationFraction"], gen)
        if not fit or not val:
            raise UsageError("validationFraction %g of %d rows leaves no validation or no training rows" % (p["validationFraction"], len(ys)))
        val_xs, val_ys = [xs[i] for i in val], [ys[i] for i in val]
        xs, ys = [xs[i] for i in fit], [ys[i] for i in fit]
    if task != "regression" and len(set(ys)) < 2:
        raise UsageError("label is constant: a classifier needs at least two classes")
    n = len(ys)
    means, scales = fit_scaler(xs)
    target = None
    yv = [float(v) for v in ys]
    if task == "regression":
        mean = sum(yv) / n
        sd = math.sqrt(sum((v - mean) ** 2 for v in yv) / n)
        if not sd > 1e-12 * max(1.0, abs(mean)):
            sd = 1.0
        target = (mean, sd)

    def tensors(rows, labels):
        x = standardise(rows, means, scales, dtype).to(device)
        if task == "regression":
            y = torch.tensor([(v - target[0]) / target[1] for v in labels], dtype=dtype)
        elif n_classes == 2:
            y = torch.tensor(labels, dtype=dtype)
        else:
            y = torch.tensor(labels, dtype=torch.long)
        return x, y.to(device)

    x, y = tensors(xs, ys)
    vx = vy = None
    if val_xs is not None:
        vx, vy = tensors(val_xs, val_ys)

    sizes = [len(means)] + p["hidden"] + [outs]
    net = build_net(sizes, p["activation"])
    with torch.no_grad():
        for layer in linear_layers(net):  # Glorot uniform, biases too
            bound = math.sqrt(6.0 / (layer.in_features + layer.out_features))
            layer.weight.uniform_(-bound, bound, generator=gen)
            layer.bias.uniform_(-bound, bound, generator=gen)
    net = net.to(device=device, dtype=dtype)
    weights = [layer.weight for layer in linear_layers(net)]
    opt = torch.optim.Adam(net.parameters(), lr=p["learningRate"], betas=(0.9, 0.999), eps=1e-8)
    batch = min(p["batchSize"], n)
    l2, tol, patience = p["l2"], p["tol"], p["nIterNoChange"]

    best_loss, no_improve, stop, epoch = math.inf, 0, "epochs", 0
    best_state, train_loss, val_loss = None, None, None
    while epoch < p["epochs"]:
        perm = torch.randperm(n, generator=gen).to(device)
        total = torch.zeros((), dtype=torch.float64, device=device)
        net.train()
        for start in range(0, n, batch):
            idx = perm[start:start + batch]
            loss = summed_loss(net(x[idx]), y[idx], task, n_classes)
            objective = loss + 0.5 * l2 * sum((w * w).sum() for w in weights)
            opt.zero_grad(set_to_none=True)
            (objective / len(idx)).backward()
            opt.step()
            total += objective.detach().to(torch.float64)
        epoch += 1
        train_loss = total.item() / n
        if not math.isfinite(train_loss):
            raise UsageError("training diverged in epoch %d (non-finite loss); lower learningRate" % epoch)
        current = train_loss
        if vx is not None:
            net.eval()
            with torch.no_grad():
                val_loss = summed_loss(net(vx), vy, task, n_classes).item() / len(vy)
            current = val_loss
        no_improve = no_improve + 1 if current > best_loss - tol else 0
        if current < best_loss:
            best_loss = current
            if vx is not None:
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        if no_improve > patience:
            stop = "earlyStopping" if vx is not None else "converged"
            break
    if best_state is not None:
        net.load_state_dict(best_state)
        val_loss = best_loss

    out_act = "identity" if task == "regression" else ("sigmoid" if n_classes == 2 else "softmax")
    layers = []
    lin = linear_layers(net)
    for i, layer in enumerate(lin):
        w = layer.weight.detach().to("cpu", torch.float64).tolist()
        b = layer.bias.detach().to("cpu", torch.float64).tolist()
        if not all(math.isfinite(v) for row in w for v in row) or not all(math.isfinite(v) for v in b):
            raise UsageError("training diverged (non-finite weights); lower learningRate")
        layers.append({"weights": w, "bias": b, "activation": p["activation"] if i < len(lin) - 1 else out_act})
    model = {"scaler": {"mean": means, "scale": scales}, "layers": layers}
    if target is not None:
        model["target"] = {"mean": target[0], "scale": target[1]}
    training = {"rows": n, "validationRows": len(val_ys) if val_ys else 0,
                "classCounts": [ys.count(c) for c in range(n_classes)] if n_classes else None,
                "iterations": epoch, "stop": stop, "trainLoss": train_loss, "validationLoss": val_loss}
    return model, training


def predict(model, xs, task, n_classes):
    """The model's outputs in float64 on the CPU from the exported weights."""
    sc = model["scaler"]
    h = standardise(xs, sc["mean"], sc["scale"], torch.float64)
    for layer in model["layers"]:
        h = h @ torch.tensor(layer["weights"], dtype=torch.float64).T + torch.tensor(layer["bias"], dtype=torch.float64)
        if layer["activation"] == "relu":
            h = torch.relu(h)
        elif layer["activation"] == "tanh":
            h = torch.tanh(h)
    if task == "regression":
        return (h[:, 0] * model["target"]["scale"] + model["target"]["mean"]).tolist()
    if n_classes == 2:
        p = torch.sigmoid(h[:, 0])
        return torch.stack([1 - p, p], dim=1).tolist()
    return torch.softmax(h, dim=1).tolist()


# ---------------------------------------------------------------------------
# gyre.model/v1, byte for byte as Go's encoding/json writes it


def go_digits(v):
    """Shortest round-trip digits and the decimal exponent of a float."""
    t = decimal.Decimal(repr(v)).normalize().as_tuple()
    return "".join(map(str, t.digits)), t.exponent


def go_fixed(digits, exp):
    if exp >= 0:
        return digits + "0" * exp
    point = len(digits) + exp
    if point > 0:
        return digits[:point] + "." + digits[point:]
    return "0." + "0" * -point + digits


def go_exp(digits, exp):
    e = len(digits) + exp - 1
    mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return "%se%s%02d" % (mant, "-" if e < 0 else "+", abs(e))


def go_float(v):
    """encoding/json's float64: shortest digits, %f between 1e-6 and 1e21."""
    if not math.isfinite(v):
        raise UsageError("cannot encode %r in JSON" % v)
    if v == 0:
        return "-0" if math.copysign(1, v) < 0 else "0"
    sign = "-" if v < 0 else ""
    digits, exp = go_digits(abs(v))
    if 1e-6 <= abs(v) < 1e21:
        return sign + go_fixed(digits, exp)
    s = go_exp(digits, exp)
    if s[-4] == "e" and s[-3] == "-" and s[-2] == "0":  # e-07 → e-7
        s = s[:-2] + s[-1]
    return sign + s


def go_format_g(v):
    """strconv.FormatFloat(v, 'g', -1, 64)."""
    if v == 0:
        return "-0" if math.copysign(1, v) < 0 else "0"
    sign = "-" if v < 0 else ""
    digits, exp = go_digits(abs(v))
    e = len(digits) + exp - 1
    if e < -4 or e >= 6:  # Go uses %e from 1e6 up when printing shortest
        return sign + go_exp(digits, exp)
    return sign + go_fixed(digits, exp)


def go_string(s):
    out = ['"']
    for ch in s:
        c = ord(ch)
        if ch in '\\"':
            out.append("\\" + ch)
        elif ch == "\b":
            out.append("\\b")
        elif ch == "\f":
            out.append("\\f")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif c < 0x20 or ch in "<>&" or ch in "\u2028\u2029":
            out.append("\\u%04x" % c)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def go_json(v):
    """Compact JSON as Go writes it: dicts keep their order (give struct
    fields in Go's order; map keys sorted), floats in Go's form."""
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return go_float(v)
    if isinstance(v, str):
        return go_string(v)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(go_json(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(go_string(k) + ":" + go_json(x) for k, x in v.items()) + "}"
    raise UsageError("cannot encode %r" % (v,))


def artifact_bytes(params, seed, signature, training, model):
    """A gyre.model/v1 document with its checksum: the SHA-256 of the compact
    document without the checksum field (libs/ml/artifact.go)."""
    sig = {"task": signature["task"],
           "inputs": [{"name": name, "type": "numeric"} for name in signature["inputs"]]}
    if signature.get("label"):
        sig["label"] = signature["label"]
    if signature.get("classes"):
        sig["classes"] = signature["classes"]
    tr = {"rows": training["rows"]}
    if training.get("validationRows"):
        tr["validationRows"] = training["validationRows"]
    if training.get("classCounts"):
        tr["classCounts"] = training["classCounts"]
    tr["iterations"] = training["iterations"]
    tr["stop"] = training["stop"]
    tr["trainLoss"] = float(training["trainLoss"])
    if training.get("validationLoss") is not None:
        tr["validationLoss"] = float(training["validationLoss"])
    doc = {"format": FORMAT, "algorithm": "mlp",
           "params": {k: params[k] for k in sorted(params)},
           "seed": seed, "signature": sig, "training": tr, "model": model}
    body = go_json(doc)
    digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
    return (body[:-1] + ',"checksum":' + go_string("sha256:" + digest) + "}\n").encode("utf-8")


# ---------------------------------------------------------------------------


def pick_device(arg):
    choice = arg or os.environ.get("GYRE_TORCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="training CSV (standalone mode)")
    ap.add_argument("--label", help="label column (standalone mode)")
    ap.add_argument("--task", choices=["classification", "regression"], default="classification")
    ap.add_argument("--param", action="append", default=[], help="name=value, e.g. hidden=64,32")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", help="where to write the artifact (standalone mode)")
    ap.add_argument("--predict", help="CSV to score with the trained model")
    ap.add_argument("--predict-out", help="where to write the scores of --predict as JSON")
    ap.add_argument("--device", help="cuda, cpu, cuda:1, ... (default: cuda when available)")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = ap.parse_args(argv)
    device = pick_device(args.device)
    dtype = torch.float64 if args.dtype == "float64" else torch.float32

    if args.data is None:  # the `algorithm: command` protocol
        env = os.environ
        if "GYRE_TRAIN_CSV" not in env:
            raise UsageError("give --data/--label/--out, or run as a pipeline's command trainer (GYRE_TRAIN_CSV unset)")
        raw_params = json.loads(env.get("GYRE_PARAMS") or "{}") or {}
        seed = int(env.get("GYRE_SEED") or 1)
        label = env["GYRE_LABEL"]
        classes = [c for c in env.get("GYRE_CLASSES", "").split(",") if c] or None
        task = env.get("GYRE_TASK") or ("classification" if classes else "regression")
        features = env["GYRE_FEATURES"].split(",")
        features, xs, ys, classes = read_table(env["GYRE_TRAIN_CSV"], label, features, task, classes)
        out_path = env["GYRE_MODEL_OUT"]
    else:
        if not args.label or not args.out:
            raise UsageError("--data needs --label and --out")
        raw_params = dict(cli_param(t) for t in args.param)
        seed, label, task = args.seed, args.label, args.task
        features, xs, ys, classes = read_table(args.data, label, None, task)
        out_path = args.out
    params = parse_params(raw_params)
    model, training = train(xs, ys, task, classes, params, seed, device, dtype)
    signature = {"task": task, "inputs": features, "label": label, "classes": classes if task != "regression" else None}
    data = artifact_bytes(params, seed, signature, training, model)
    with open(out_path, "wb") as f:
        f.write(data)
    print("trained mlp %s on %s: %d rows, %d epochs (%s), train loss %.6g" % (
        "x".join(str(len(l["bias"])) for l in model["layers"]), device, training["rows"],
        training["iterations"], training["stop"], training["trainLoss"]), file=sys.stderr)
    if args.predict:
        _, pxs, _, _ = read_table(args.predict, None, features, task)
        scores = predict(model, pxs, task, len(classes) if classes else 0)
        with open(args.predict_out, "w") as f:
            json.dump(scores, f)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except UsageError as e:
        sys.exit("train.py: %s" % e)
