#!/usr/bin/python3
"""make bench-ml: Gyre's libs/ml against scikit-learn and XGBoost, one table.

For each dataset, on the same train/test split and the same CPU threads:

  gyre gbdt      libs/ml "gbdt"                  (libs/cmd/mlbench, in-process Go)
  sklearn HGB    HistGradientBoostingClassifier  (Debian python3-sklearn)
  xgboost hist   XGBClassifier(tree_method=hist) (Debian python3-xgboost)
  gyre logreg    libs/ml "logreg"
  sklearn LR     StandardScaler + LogisticRegression(lbfgs)

then a batch-prediction row (100 full trees of depth 6 on 1M rows) and the
acceptance verdicts of issue #4. The hyper-parameters are aligned as described
in GBDT_ALIGNMENT / LOGREG_ALIGNMENT below and in docs/bench-ml.md.

Timing: the fit time of a library is the best of --runs fits on data already in
memory (Go: ml.Train in a libs/cmd/mlbench --serve process; Python:
estimator.fit), so reading CSV files is never timed. The fits go in rounds, each
round fitting every model once, so that load from other processes hits every
library alike; prediction throughput is measured on the fitted model in memory, calling
the probability API (gyre PredictProba, sklearn predict_proba, xgboost
inplace_predict) on the test rows until --predict-time has passed, the best of
--runs such measurements. Best rather than median because on a shared machine
other processes only ever add time (medians are in the --json output too).

Run it with /usr/bin/python3 (the interpreter Debian's packages are installed
for); it first runs scripts/install-bench-deps.sh, which installs the peers
when they are missing.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = "/usr/bin/python3"

# Acceptance thresholds of issue #4.
GBDT_ACC_POINTS = 0.5  # |gyre - sklearn HGB| accuracy, in points
GBDT_FIT_RATIO = 1.0  # gyre fit time / sklearn HGB fit time
LOGREG_ACC_POINTS = 0.2  # |gyre - sklearn LR| accuracy, in points
PREDICT_ROWS_PER_S = 1_000_000

ITERATIONS = 100
LEARNING_RATE = 0.1
MAX_DEPTH = 6
MAX_LEAVES = 31
MAX_BINS = 255
MIN_SAMPLES_LEAF = 20
XGB_MIN_CHILD_WEIGHT = 1.0

GBDT_ALIGNMENT = f"""\
GBDT: {ITERATIONS} iterations (multiclass: one tree per class each), learning rate {LEARNING_RATE},
  max depth {MAX_DEPTH} edges, at most {MAX_LEAVES} leaves grown best-first, {MAX_BINS} bins for non-missing values,
  no L2, no early stopping, all {{threads}} threads.
  gyre     trees={ITERATIONS} learningRate={LEARNING_RATE} maxDepth={MAX_DEPTH} maxLeaves={MAX_LEAVES} maxBins={MAX_BINS}
           minSamplesLeaf={MIN_SAMPLES_LEAF} l2=0 earlyStopping=false
  sklearn  max_iter={ITERATIONS} learning_rate={LEARNING_RATE} max_depth={MAX_DEPTH} max_leaf_nodes={MAX_LEAVES} max_bins={MAX_BINS}
           min_samples_leaf={MIN_SAMPLES_LEAF} l2_regularization=0 early_stopping=False
  xgboost  n_estimators={ITERATIONS} learning_rate={LEARNING_RATE} tree_method=hist grow_policy=lossguide
           max_depth={MAX_DEPTH} max_leaves={MAX_LEAVES} max_bin={MAX_BINS} reg_lambda=0 min_child_weight={XGB_MIN_CHILD_WEIGHT:g}
           base_score=training positive rate (binary); XGBoost has no minimum row count per leaf,
           only min_child_weight on the hessian sum (1 = its default, about 4 rows at p=0.5)"""

LOGREG_ALIGNMENT = """\
logreg: L2 with C=1 (gyre l2=1/C=1), inputs standardised (gyre does it inside the model;
  sklearn make_pipeline(StandardScaler(), LogisticRegression(C=1, solver="lbfgs"))), multinomial
  for more than two classes, tol=1e-4, at most 1000 L-BFGS iterations (each stops on its own
  gradient test)"""


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="threads for every library (default: all cores, %(default)s)")
    p.add_argument("--runs", type=int, default=3, help="fits (and throughput measurements) per model; the best is reported (default 3)")
    p.add_argument("--predict-time", type=float, default=0.3,
                   help="seconds of repeated prediction per throughput measurement (default 0.3)")
    p.add_argument("--binary-rows", type=int, default=250_000,
                   help="rows of the synthetic binary set, 80%% for training (default 250000)")
    p.add_argument("--multiclass-rows", type=int, default=100_000,
                   help="rows of the synthetic 5-class set, 80%% for training (default 100000)")
    p.add_argument("--predict-rows", type=int, default=1_000_000,
                   help="rows of the batch-prediction measurement (default 1000000)")
    p.add_argument("--json", metavar="FILE", help="also write every measurement to FILE as JSON")
    p.add_argument("--keep", metavar="DIR", help="write the generated CSV files to DIR and keep them")
    p.add_argument("--strict", action="store_true", help="exit 1 when an acceptance verdict fails")
    p.add_argument("--skip-deps", action="store_true", help="do not run scripts/install-bench-deps.sh")
    return p.parse_args()


ARGS = parse_args()
if os.path.realpath(sys.executable) != os.path.realpath(PYTHON) and os.path.exists(PYTHON):
    # Debian's sklearn and xgboost are installed for the system interpreter.
    os.execv(PYTHON, [PYTHON] + sys.argv)
if not ARGS.skip_deps:
    subprocess.run(["bash", os.path.join(REPO, "scripts", "install-bench-deps.sh"), "python3-sklearn", "python3-xgboost"],
                   check=True)
# Thread pools are sized when the libraries load: set them first.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402
import sklearn  # noqa: E402
import xgboost as xgb  # noqa: E402
from sklearn.datasets import make_classification  # noqa: E402
from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import accuracy_score, roc_auc_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402


_T0 = time.perf_counter()
# The 1-minute load average at the start and the end of the run.
LOAD = []


def log(msg):
    print(f"[{time.perf_counter() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- datasets

class Dataset:
    """A train/test split, in memory and as CSV files for the Go side."""

    def __init__(self, name, source, x_train, y_train, x_test, y_test, features):
        self.name, self.source = name, source
        self.x_train, self.y_train = np.ascontiguousarray(x_train, dtype=np.float64), y_train.astype(np.int64)
        self.x_test, self.y_test = np.ascontiguousarray(x_test, dtype=np.float64), y_test.astype(np.int64)
        self.features = features
        self.classes = int(max(self.y_train.max(), self.y_test.max()) + 1)
        self.train_csv = self.test_csv = None

    def write(self, directory):
        self.train_csv = os.path.join(directory, self.name + "-train.csv")
        self.test_csv = os.path.join(directory, self.name + "-test.csv")
        for path, x, y in ((self.train_csv, self.x_train, self.y_train), (self.test_csv, self.x_test, self.y_test)):
            # %.17g round-trips every float64, so Go parses the very values
            # Python trains on.
            data = np.column_stack([x, y.astype(np.float64)])
            fmt = ["%.17g"] * x.shape[1] + ["%d"]
            np.savetxt(path, data, fmt=fmt, delimiter=",", header=",".join(self.features + ["y"]), comments="")


def elec2():
    path = os.path.join(REPO, "examples", "elec2", "elec2.csv")
    with open(path) as f:
        header = f.readline().strip().split(",")
    data = np.loadtxt(path, delimiter=",", skiprows=1)
    label = header.index("class")
    y = data[:, label].astype(np.int64)
    x = np.delete(data, label, axis=1)
    features = [h for i, h in enumerate(header) if i != label]
    cut = int(len(x) * 0.7)  # time order: the first 70% trains, the last 30% tests
    return Dataset("elec2", "examples/elec2/elec2.csv (NSW electricity, Harries 1999), "
                   f"time-ordered: first {cut} rows train, last {len(x) - cut} test",
                   x[:cut], y[:cut], x[cut:], y[cut:], features)


def synthetic_binary(rows):
    x, y = make_classification(n_samples=rows, n_features=20, n_informative=10, n_redundant=5,
                               n_classes=2, flip_y=0.02, class_sep=1.0, random_state=42)
    cut = int(rows * 0.8)
    return Dataset("binary-20f", f"sklearn make_classification(n_samples={rows}, n_features=20, "
                   "n_informative=10, n_redundant=5, flip_y=0.02, random_state=42), "
                   f"first {cut} rows train, rest test",
                   x[:cut], y[:cut], x[cut:], y[cut:], [f"f{i}" for i in range(20)])


def synthetic_multiclass(rows):
    x, y = make_classification(n_samples=rows, n_features=20, n_informative=12, n_redundant=4,
                               n_classes=5, n_clusters_per_class=2, flip_y=0.02, random_state=7)
    cut = int(rows * 0.8)
    return Dataset("5class-20f", f"sklearn make_classification(n_samples={rows}, n_features=20, "
                   "n_informative=12, n_redundant=4, n_classes=5, n_clusters_per_class=2, flip_y=0.02, "
                   f"random_state=7), first {cut} rows train, rest test",
                   x[:cut], y[:cut], x[cut:], y[cut:], [f"f{i}" for i in range(20)])


# ---------------------------------------------------------------- measuring

def throughput(rows, predict):
    """Rows per second of predict(), called until --predict-time passed."""
    calls, start = 0, time.perf_counter()
    while True:
        predict()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= ARGS.predict_time:
            return rows * calls / elapsed


def auc_of(ds, proba):
    if ds.classes == 2:
        return float(roc_auc_score(ds.y_test, proba[:, 1]))
    return float(roc_auc_score(ds.y_test, proba, multi_class="ovr", average="macro"))


class GyreSession:
    """A libs/cmd/mlbench --serve process holding one dataset in memory."""

    def __init__(self, binary, ds):
        self.proc = subprocess.Popen(
            [binary, "--serve", "--train", ds.train_csv, "--test", ds.test_csv, "--label", "y",
             "--threads", str(ARGS.threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)

    def call(self, **request):
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"mlbench exited with {self.proc.wait()} on {request}")
        return json.loads(line)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


class GyreModel:
    """A libs/ml model, fitted and measured in the Go process."""

    def __init__(self, session, name, algorithm, params):
        self.session, self.name, self.algorithm, self.params = session, name, algorithm, params

    def fit(self):
        return self.session.call(op="fit", name=self.name, algorithm=self.algorithm, params=self.params)["fit_s"]

    def score(self):
        r = self.session.call(op="score", name=self.name)
        out = {"accuracy": r["accuracy"], "auc": r["auc"], "iterations": r["iterations"]}
        if "trees" in r:
            out.update(trees=r["trees"], leaves_per_tree=r["leaves_per_tree"], max_depth=r["max_depth"])
        return out

    def rates(self, rows=0):
        """(probability, class) prediction rows/s on the test rows or rows replicated ones."""
        r = self.session.call(op="throughput", name=self.name, rows=rows, min_time_s=ARGS.predict_time)
        return r["proba_rows_per_s"], r["predict_rows_per_s"]


class PyModel:
    """A scikit-learn or XGBoost model, fitted and measured in this process."""

    def __init__(self, ds, make, proba_of, iterations):
        self.ds, self.make, self.proba_of, self.iterations = ds, make, proba_of, iterations
        self.model = None

    def fit(self):
        self.model = None  # free the previous fit first, as the Go side does
        model = self.make()
        start = time.perf_counter()
        model.fit(self.ds.x_train, self.ds.y_train)
        elapsed = time.perf_counter() - start
        self.model = model
        return elapsed

    def score(self):
        proba = self.proba_of(self.model, self.ds.x_test)
        return {"accuracy": float(accuracy_score(self.ds.y_test, proba.argmax(axis=1))),
                "auc": auc_of(self.ds, proba), "iterations": self.iterations(self.model)}

    def rates(self):
        x = self.ds.x_test
        return throughput(len(x), lambda: self.proba_of(self.model, x)), None


def hgb(**overrides):
    params = dict(max_iter=ITERATIONS, learning_rate=LEARNING_RATE, max_depth=MAX_DEPTH,
                  max_leaf_nodes=MAX_LEAVES, max_bins=MAX_BINS, min_samples_leaf=MIN_SAMPLES_LEAF,
                  l2_regularization=0.0, early_stopping=False, random_state=0)
    params.update(overrides)
    return HistGradientBoostingClassifier(**params)


def xgb_classifier(ds, **overrides):
    params = dict(n_estimators=ITERATIONS, learning_rate=LEARNING_RATE, tree_method="hist",
                  grow_policy="lossguide", max_depth=MAX_DEPTH, max_leaves=MAX_LEAVES, max_bin=MAX_BINS,
                  reg_lambda=0.0, min_child_weight=XGB_MIN_CHILD_WEIGHT, n_jobs=ARGS.threads, random_state=0)
    if ds.classes == 2:
        # sklearn and gyre start from the log-odds of the training prior;
        # XGBoost 1.7 starts from base_score (default 0.5) unless told.
        params.update(objective="binary:logistic", base_score=float(ds.y_train.mean()))
    else:
        params.update(objective="multi:softprob")
    params.update(overrides)
    return xgb.XGBClassifier(**params)


def xgb_proba(model, x):
    p = model.get_booster().inplace_predict(x)
    if p.ndim == 1:
        return np.column_stack([1 - p, p])
    return p


def sk_proba(model, x):
    return model.predict_proba(x)


def logreg():
    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, solver="lbfgs", tol=1e-4, max_iter=1000))


def gyre_params_gbdt(**overrides):
    p = dict(trees=ITERATIONS, learningRate=LEARNING_RATE, maxDepth=MAX_DEPTH, maxLeaves=MAX_LEAVES,
             maxBins=MAX_BINS, minSamplesLeaf=MIN_SAMPLES_LEAF, l2=0, earlyStopping=False)
    p.update(overrides)
    return p


GYRE_LOGREG = {"l2": 1.0, "tol": 1e-4, "maxIter": 1000}


def xgb_leaves(model):
    dump = model.get_booster().get_dump()
    return sum(t.count("leaf=") for t in dump) / len(dump), len(dump)


def hgb_leaves(model):
    try:
        preds = [p for it in model._predictors for p in it]  # private, but stable since 0.21
        return sum(p.get_n_leaf_nodes() for p in preds) / len(preds), len(preds)
    except AttributeError:
        return float("nan"), model.n_iter_


def measure(ds, session):
    """Fits every model --runs times, alternating libraries on each round so
    that load from other processes hits them alike; then scores each and
    measures prediction throughput, again alternating."""
    models = {
        "gyre gbdt": GyreModel(session, "gbdt", "gbdt", gyre_params_gbdt()),
        "sklearn HGB": PyModel(ds, hgb, sk_proba, lambda m: int(m.n_iter_)),
        "xgboost hist": PyModel(ds, lambda: xgb_classifier(ds), xgb_proba,
                                lambda m: int(m.get_booster().num_boosted_rounds())),
        "gyre logreg": GyreModel(session, "logreg", "logreg", GYRE_LOGREG),
        "sklearn LR": PyModel(ds, logreg, sk_proba, lambda m: int(np.max(m[-1].n_iter_))),
    }
    fits = {name: [] for name in models}
    for run in range(ARGS.runs):
        log(f"{ds.name}: fit round {run + 1}/{ARGS.runs}")
        for name, m in models.items():
            fits[name].append(m.fit())
    results = {name: m.score() for name, m in models.items()}
    rates = {name: [] for name in models}
    for run in range(ARGS.runs):
        log(f"{ds.name}: prediction round {run + 1}/{ARGS.runs}")
        for name, m in models.items():
            rates[name].append(m.rates()[0])
    for name, r in results.items():
        r.update(fit_s=fits[name], fit_best_s=min(fits[name]), fit_median_s=statistics.median(fits[name]),
                 proba_rows_per_s=max(rates[name]), proba_rows_per_s_all=rates[name])
    return results


# ---------------------------------------------------------------- report

def fmt_rate(r):
    if r >= 1e6:
        return f"{r / 1e6:.2f}M"
    if r >= 1e3:
        return f"{r / 1e3:.0f}k"
    return f"{r:.0f}"


def fmt_points(d):
    return f"{d * 100:+.2f}"


def table(rows, header):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = []
    for k, r in enumerate([header] + rows):
        cells = []
        for i, c in enumerate(r):
            c = str(c)
            cells.append(c.ljust(widths[i]) if i < 2 else c.rjust(widths[i]))
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main():
    started = time.perf_counter()
    LOAD.append(os.getloadavg()[0])
    tmp = ARGS.keep or tempfile.mkdtemp(prefix="bench-ml-")
    os.makedirs(tmp, exist_ok=True)
    sessions = []
    try:
        binary = os.path.join(tmp, "mlbench")
        log("building libs/cmd/mlbench…")
        subprocess.run(["go", "build", "-o", binary, "./libs/cmd/mlbench"], check=True, cwd=REPO)
        log("generating datasets…")
        datasets = [elec2(), synthetic_binary(ARGS.binary_rows), synthetic_multiclass(ARGS.multiclass_rows)]
        for ds in datasets:
            ds.write(tmp)
        results, speed = {}, None
        for ds in datasets:
            session = GyreSession(binary, ds)
            sessions.append(session)
            results[ds.name] = measure(ds, session)
            if ds.name == "binary-20f":
                speed = batch_prediction(ds, session)
            session.close()
        elapsed = time.perf_counter() - started
        LOAD.append(os.getloadavg()[0])
        report(datasets, results, speed, elapsed)
        if ARGS.json:
            with open(ARGS.json, "w") as f:
                json.dump({"threads": ARGS.threads, "runs": ARGS.runs, "results": results, "batch_prediction": speed,
                           "datasets": {d.name: d.source for d in datasets}, "versions": versions()}, f, indent=2)
        return 1 if ARGS.strict and any(v[0] == "FAIL" for v in verdicts(datasets, results, speed)) else 0
    finally:
        for s in sessions:
            if s.proc.poll() is None:
                s.proc.kill()
        if not ARGS.keep:
            shutil.rmtree(tmp, ignore_errors=True)


def batch_prediction(ds, session):
    """100 full trees of depth 6, predicting --predict-rows replicated test rows."""
    n = ARGS.predict_rows
    reps = -(-n // len(ds.x_test))
    x = np.ascontiguousarray(np.tile(ds.x_test, (reps, 1))[:n])
    log("batch prediction: fitting 100 full trees of depth 6 in each library…")
    gyre = GyreModel(session, "full", "gbdt", gyre_params_gbdt(maxLeaves=0))
    gyre.fit()
    shape = gyre.score()
    xg = xgb_classifier(ds, grow_policy="depthwise", max_leaves=0)
    xg.fit(ds.x_train, ds.y_train)
    booster = xg.get_booster()
    sk = hgb(max_leaf_nodes=None)
    sk.fit(ds.x_train, ds.y_train)
    rates = {"gyre Predict": [], "gyre PredictProba": [], "xgboost inplace_predict": [], "sklearn predict": []}
    for run in range(ARGS.runs):
        log(f"batch prediction: round {run + 1}/{ARGS.runs} ({n} rows)")
        proba, pred = gyre.rates(rows=n)
        rates["gyre Predict"].append(pred)
        rates["gyre PredictProba"].append(proba)
        rates["xgboost inplace_predict"].append(throughput(n, lambda: booster.inplace_predict(x)))
        rates["sklearn predict"].append(throughput(n, lambda: sk.predict(x)))
    xl, xt = xgb_leaves(xg)
    sl, st = hgb_leaves(sk)
    shapes = {"gyre Predict": (shape["trees"], shape["leaves_per_tree"]),
              "gyre PredictProba": (shape["trees"], shape["leaves_per_tree"]),
              "xgboost inplace_predict": (xt, xl), "sklearn predict": (st, sl)}
    out = {name: {"rows_per_s": max(r), "rows_per_s_all": r, "trees": shapes[name][0],
                  "leaves_per_tree": shapes[name][1]} for name, r in rates.items()}
    return {"rows": n, "dataset": ds.name, "models": out}


def versions():
    go = subprocess.run(["go", "version"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"go": go, "python": platform.python_version(), "numpy": np.__version__,
            "sklearn": sklearn.__version__, "xgboost": xgb.__version__, "cpu": cpu, "cores": os.cpu_count()}


def within_points(diff, points):
    """|diff| ≤ points/100, forgiving float rounding (5 of 1000 rows is 0.5 pt)."""
    return abs(diff) * 100 <= points + 1e-9


def verdicts(datasets, results, speed):
    out = []
    for ds in datasets:
        r = results[ds.name]
        d = r["gyre gbdt"]["accuracy"] - r["sklearn HGB"]["accuracy"]
        out.append(("PASS" if within_points(d, GBDT_ACC_POINTS) else "FAIL",
                    f"gbdt accuracy within ±{GBDT_ACC_POINTS} pt of sklearn HGB on {ds.name}: {fmt_points(d)} pt"))
    for ds in datasets:
        r = results[ds.name]
        ratio = r["gyre gbdt"]["fit_best_s"] / r["sklearn HGB"]["fit_best_s"]
        xr = r["gyre gbdt"]["fit_best_s"] / r["xgboost hist"]["fit_best_s"]
        out.append(("PASS" if ratio <= GBDT_FIT_RATIO else "FAIL",
                    f"gbdt fit time ≤ {GBDT_FIT_RATIO:.1f}× sklearn HGB on {ds.name}: {ratio:.2f}× "
                    f"(vs xgboost: {xr:.2f}×)"))
    for ds in datasets:
        r = results[ds.name]
        d = r["gyre logreg"]["accuracy"] - r["sklearn LR"]["accuracy"]
        out.append(("PASS" if within_points(d, LOGREG_ACC_POINTS) else "FAIL",
                    f"logreg accuracy within ±{LOGREG_ACC_POINTS} pt of sklearn LR on {ds.name}: {fmt_points(d)} pt"))
    m = speed["models"]
    g, x = m["gyre Predict"]["rows_per_s"], m["xgboost inplace_predict"]["rows_per_s"]
    out.append(("PASS" if g >= PREDICT_ROWS_PER_S else "FAIL",
                f"batch prediction (100 trees, depth 6) ≥ {fmt_rate(PREDICT_ROWS_PER_S)} rows/s: {fmt_rate(g)} rows/s"))
    out.append(("PASS" if g > x else "FAIL",
                f"batch prediction faster than xgboost inplace_predict: {g / x:.2f}× ({fmt_rate(g)} vs {fmt_rate(x)} rows/s)"))
    return out


def report(datasets, results, speed, elapsed):
    v = versions()
    print(f"bench-ml: Gyre libs/ml vs scikit-learn {v['sklearn']} and XGBoost {v['xgboost']} "
          f"({v['go']}, numpy {v['numpy']})")
    print(f"machine: {v['cpu']}, {v['cores']} cores; every library uses {ARGS.threads} threads; "
          f"load average {LOAD[0]:.1f} at the start, {LOAD[-1]:.1f} at the end")
    # The end figure includes this run's own threads.
    if max(LOAD[0], LOAD[-1] - ARGS.threads) > 1.0:
        # OpenMP threads spin-wait at every barrier, so with the cores taken by
        # other processes sklearn and XGBoost slow down many times more than Go.
        print("WARNING: other processes kept the cores busy during this run; fit-time and throughput ratios "
              "against the OpenMP peers (sklearn, XGBoost) are not meaningful: rerun on an idle machine")
    print(f"fit s = best of {ARGS.runs} fits, in rounds alternating the libraries (data already in memory; CSV reading not timed); "
          f"pred/s = best of {ARGS.runs} measurements of probability prediction on the test rows, model in memory")
    print()
    print("datasets:")
    for ds in datasets:
        print(f"  {ds.name:<11} {len(ds.x_train)}/{len(ds.x_test)} rows, {ds.x_train.shape[1]} features, "
              f"{ds.classes} classes: {ds.source}")
    print()
    header = ["dataset", "model", "accuracy", "AUC", "fit s", "iters", "pred/s",
              "| Δacc sk pt", "Δacc xgb pt", "fit ×sk", "fit ×xgb", "pred ×sk", "pred ×xgb"]
    rows = []
    for ds in datasets:
        r = results[ds.name]
        for k, (name, sk, xg) in enumerate([("gyre gbdt", "sklearn HGB", "xgboost hist"), ("sklearn HGB", None, None),
                                            ("xgboost hist", None, None), ("gyre logreg", "sklearn LR", None),
                                            ("sklearn LR", None, None)]):
            m = r[name]
            row = [ds.name if k == 0 else "", name, f"{m['accuracy']:.4f}",
                   f"{m['auc']:.4f}" if m.get("auc") is not None else "—",
                   f"{m['fit_best_s']:.3f}", str(m.get("iterations", "")), fmt_rate(m["proba_rows_per_s"])]
            ratios = ["|", "", "", "", "", ""]
            if sk:
                s = r[sk]
                ratios = ["| " + fmt_points(m["accuracy"] - s["accuracy"]),
                          fmt_points(m["accuracy"] - r[xg]["accuracy"]) if xg else "—",
                          f"{m['fit_best_s'] / s['fit_best_s']:.2f}",
                          f"{m['fit_best_s'] / r[xg]['fit_best_s']:.2f}" if xg else "—",
                          f"{m['proba_rows_per_s'] / s['proba_rows_per_s']:.2f}",
                          f"{m['proba_rows_per_s'] / r[xg]['proba_rows_per_s']:.2f}" if xg else "—"]
            rows.append(row + ratios)
    print(table(rows, header))
    print()
    m = speed["models"]
    g = m["gyre Predict"]["rows_per_s"]
    print(f"batch prediction: GBDT of 100 trees, depth 6 (full trees: gyre maxLeaves=0, sklearn max_leaf_nodes=None, "
          f"xgboost depthwise), trained on {speed['dataset']}, predicting {speed['rows']:,} rows "
          f"(its test rows replicated), {ARGS.threads} threads, best of {ARGS.runs}")
    srows = []
    for name in ("gyre Predict", "gyre PredictProba", "xgboost inplace_predict", "sklearn predict"):
        e = m[name]
        srows.append(["", name, str(e["trees"]), f"{e['leaves_per_tree']:.1f}", fmt_rate(e["rows_per_s"]),
                      f"{g / e['rows_per_s']:.2f}"])
    print(table(srows, ["", "model", "trees", "leaves/tree", "rows/s", "gyre Predict ×"]))
    print()
    print("hyper-parameters:")
    print("  " + GBDT_ALIGNMENT.format(threads=ARGS.threads).replace("\n", "\n  "))
    print("  " + LOGREG_ALIGNMENT.replace("\n", "\n  "))
    print()
    print("acceptance (issue #4):")
    for verdict, text in verdicts(datasets, results, speed):
        print(f"  {verdict}  {text}")
    print(f"\n(total {elapsed:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
