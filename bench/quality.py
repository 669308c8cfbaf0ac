"""Prequential quality and speed against Vowpal Wabbit, on the same events, in one run.

Streams (binary labels): ``clicks`` (``streamlearn.generators.clicks``, seed 0;
8 categorical + 4 numeric features), ``interactions``
(``streamlearn.generators.interactions``, seed 0: 6 categorical + 2 numeric
features whose categorical values interact in pairs; its Bayes-optimal
log-loss, ``interactions_optimum``, is printed with it) and River's ``sea``,
``hyperplane`` and ``agrawal`` generators (``streamlearn.generators.river_stream``,
seed 0). ``clicks-weighted`` is the clicks stream with its negatives downsampled
(each kept with probability 1/4, seed 0) and the kept ones given the importance weight
4, as a user keeping one negative in four would send them (the event's ``weight``):
VW reads the same weights (``label weight |f ...``).

Systems, each learning every event once, in order, predicting it first:

- ``vw``: Vowpal Wabbit (pip ``vowpalwabbit``) from a text file written
  beforehand, one core, ``--loss_function logistic --link logistic -b 20``
  and its defaults otherwise (adaptive, normalised, invariant updates,
  learning rate 0.5, a constant feature). Its progressive validation loss is
  its prequential log-loss (printed as ``vw_pv_loss`` to cross-check ours,
  computed from its predictions file). Timed: building the workspace and
  reading the file (text parsing included).
- ``event-normalized``: our per-event kernel with the normalised adaptive
  optimiser and its invariant updates, ``LogisticRegression(Normalized(0.5),
  bits=20, update="event", intercept_lr=None)``: VW's default learner's kind
  of update at its learning rate, the intercept learned by the same rule as
  VW's constant feature: the equivalent settings.
- ``event-normalized-plain``: the same without invariant updates
  (``Normalized(0.5, invariant=False)``).
- ``event-mixture``: ``LogisticMixture(Normalized(0.5, invariant=False),
  rates=[1.0, 0.5], bits=20, intercept_lr=None)`` (the training job's
  ``model.rates = [1.0, 0.5]``): two such learners, at 0.5 and 0.25, answering
  with their Bayes mixture; the system of the goal below.
- ``event-adagrad``: the per-event kernel with ``AdaGrad(0.1)`` (the shape of
  the speed goal: AdaGrad, 12 features per event on clicks).
- ``batch-adagrad``: today's mini-batch learner, AdaGrad(0.1) in steps of
  1,000 events (the training job's default), for reference.

On ``interactions`` only (every feature in one VW namespace ``f``, so VW's
crosses and ours cover the same pairs):

- ``vw-q``: VW with ``-q ff`` (hashed quadratic crosses of every pair of
  features, learned as linear features);
- ``crossed-all``: our per-event learner (``event-normalized``) with
  ``crosses`` of every pair of the 8 features (28 crosses), against ``vw-q``
  (VW also crosses each number with itself, ``x0*x0``: the one difference);
- ``vw-q-pairs``: VW with each feature in a namespace of its own and ``-q``
  for the stream's four interacting pairs
  (``streamlearn.generators.INTERACTION_PAIRS``);
- ``crossed-pairs``: ours with ``crosses = INTERACTION_PAIRS``, against
  ``vw-q-pairs``: the same crosses on both sides;
- ``mixture-crossed-all`` / ``mixture-crossed-pairs``: ``event-mixture`` with
  the same crosses, against ``vw-q`` / ``vw-q-pairs``;
- ``vw-lrq4`` / ``vw-lrq8``: VW with ``--lrq ff4`` / ``--lrq ff8`` (low-rank
  quadratic: VW's factorization machine of rank 4 / 8);
- ``fm-k4`` / ``fm-k8``: our factorization machine,
  ``FMClassifier(Normalized(0.5, invariant=False), k=4 or 8, bits=20,
  intercept_lr=None, factor_optimizer=AdaGrad(0.2 or 0.1), init_std=0.1)``,
  per event in the compiled kernel. ``loss/ref`` compares it with VW's
  ``--lrq`` of the same rank.

Ours learn bundles of 5,000 events (the training job's bundle size) already
hashed into CSR form, as the JVM encoder hands them over: ``ev/s`` is the
learning (predict + learn) alone, best of ``--repeats`` runs from a fresh
model; ``ev/s+hash`` adds hashing the feature mappings in Python once (the
training job hashes in the JVM instead). VW's figure includes parsing its
text file: its own fastest input path. The whole process is pinned to one
core; ``ev/cpu-s`` divides by the process's CPU time instead of the wall
clock (VW parses in a second thread: its CPU time counts both), the fairer
figure on a machine shared with other work; ``speed/vw`` is the ratio of
those. Log-loss is clipped at 1e-15 like ``streamlearn.metrics.LogLoss``; on a
weighted stream it counts every event once, as the training job's metrics do
(``weighted_log_loss``, in the JSON, weighs them).

The goal, per stream: ``event-mixture``'s log-loss at most VW's; on the weighted
stream the weighted log-loss, the loss both learn to minimise and VW's own
progressive loss (the unweighted one is printed beside it).

Run: ``.venv/bin/python bench/quality.py [--clicks 300000] [--river 100000]``.
Prints a table and ratios, and writes ``bench/results/quality.json``.

``--seeds K`` asks instead whether one seed's ratio is the rule: each stream drawn
with seeds 0 .. K-1, ``vw`` against ``event-normalized``,
``event-normalized-plain`` and ``event-mixture`` only (log-loss, weighted on the
weighted stream, one run each), printing per stream the
mean ratio to VW and on how many seeds ours is at most VW's; it writes
``bench/results/quality_seeds.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from itertools import combinations
from pathlib import Path

import numpy as np

from streamlearn.generators import (
    INTERACTION_PAIRS,
    clicks,
    interactions,
    interactions_optimum,
    river_stream,
)
from streamlearn.learners import FMClassifier, LogisticMixture, LogisticRegression
from streamlearn.optim import AdaGrad, Normalized

BUNDLE = 5_000
STEP = 1_000
BITS = 20


#: clicks-weighted: a negative is kept with this probability, and weighs its inverse
KEEP_NEGATIVE = 0.25


def downsampled(n: int, seed: int = 0) -> list[dict]:
    """``n`` clicks events, negatives downsampled and weighted."""
    rng = np.random.default_rng(seed)
    out: list[dict] = []
    for event in clicks(8 * n, seed=seed):
        if event["label"]:
            out.append(event)
        elif rng.random() < KEEP_NEGATIVE:
            out.append({**event, "weight": 1 / KEEP_NEGATIVE})
        if len(out) == n:
            return out
    raise ValueError(f"clicks gave fewer than {n} events after downsampling")


def load(name: str, n: int, seed: int = 0) -> tuple[list[dict], np.ndarray, np.ndarray | None]:
    """Features, labels and the events' weights (None: all 1)."""
    weights = None
    if name == "clicks-weighted":
        events = downsampled(n, seed)
        weights = np.array([e.get("weight", 1.0) for e in events])
    elif name == "clicks":
        events = list(clicks(n, seed=seed))
    elif name == "interactions":
        events = list(interactions(n, seed=seed))
    else:
        events = list(river_stream(name, n, seed=seed))
    ys = np.array([float(e["label"]) for e in events])
    return [e["features"] for e in events], ys, weights


def scores(p: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> dict[str, float]:
    q = np.clip(p, 1e-15, 1 - 1e-15)
    losses = -(y * np.log(q) + (1 - y) * np.log(1 - q))
    out = {"log_loss": float(losses.mean()), "accuracy": float(((p > 0.5) == (y > 0.5)).mean())}
    if weights is not None:
        out["weighted_log_loss"] = float((losses * weights).sum() / weights.sum())
    return out


def vw_line(x: dict, y: float, weight: float = 1.0) -> str:
    parts = []
    for name, value in x.items():
        if isinstance(value, str):
            parts.append(f"{name}={value}")
        elif isinstance(value, list):
            parts.extend(f"{name}={v}" for v in value)
        else:
            parts.append(f"{name}:{float(value)!r}")
    label = f"{1 if y > 0.5 else -1}" + ("" if weight == 1.0 else f" {weight!r}")
    return f"{label} |f {' '.join(parts)}\n"


def vw_line_per_feature(x: dict, y: float) -> str:
    """Each feature in a namespace of its own, named by a letter (:data:`NAMESPACES`)."""
    parts = [f"|{NAMESPACES[name]} {vw_line({name: value}, y).split(' |f ')[1].strip()}"
             for name, value in x.items()]
    return f"{1 if y > 0.5 else -1} {' '.join(parts)}\n"


def run_vw(xs: list[dict], y: np.ndarray, workdir: str, repeats: int, extra: str = "",
           per_feature: bool = False, weights: np.ndarray | None = None) -> dict:
    from vowpalwabbit import pyvw

    data = os.path.join(workdir, "per-feature.vw" if per_feature else "events.vw")
    preds = os.path.join(workdir, "preds.txt")
    if not os.path.exists(data):
        with open(data, "w") as f:
            if per_feature:
                f.writelines(vw_line_per_feature(x, label) for x, label in zip(xs, y, strict=True))
            else:
                w = np.ones(len(y)) if weights is None else weights
                f.writelines(vw_line(x, label, float(h))
                             for x, label, h in zip(xs, y, w, strict=True))
    best, best_cpu, pv_loss = float("inf"), float("inf"), None
    args = f"--loss_function logistic --link logistic -b {BITS} {extra}".strip()
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        vw = pyvw.Workspace(f"{args} -d {data} -p {preds} --quiet")
        vw.run_parser()
        vw.finish()  # flushes the predictions file
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - start_cpu)
        pv_loss = vw.get_sum_loss() / vw.get_weighted_examples()
    p = np.loadtxt(preds, ndmin=1)
    return {**scores(p, y, weights), "events_per_s": len(y) / best,
            "events_per_cpu_s": len(y) / best_cpu, "vw_pv_loss": pv_loss, "args": args}


def run_ours(make, xs: list[dict], y: np.ndarray, repeats: int, step: int | None,
             weights: np.ndarray | None = None) -> dict:
    encoder = make()
    start = time.perf_counter()
    batch = encoder.encode(xs)
    hash_s = time.perf_counter() - start
    n = len(y)
    h = np.ones(n) if weights is None else weights
    bundles = [(batch.row_range(i, min(i + BUNDLE, n)), y[i:i + BUNDLE], h[i:i + BUNDLE])
               for i in range(0, n, BUNDLE)]
    best, best_cpu, p = float("inf"), float("inf"), None
    for _ in range(repeats):
        model = make()
        out = []
        start, start_cpu = time.perf_counter(), time.process_time()
        for b, labels, hs in bundles:
            if step is None:
                out.append(model.predict_learn_many(b, labels, hs))
            else:  # the training job's mini-batch steps inside a bundle
                for j in range(0, b.n_rows, step):
                    out.append(model.predict_learn_many(
                        b.row_range(j, min(j + step, b.n_rows)), labels[j:j + step],
                        hs[j:j + step]))
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - start_cpu)
        p = np.concatenate(out)[:, 1]
    return {**scores(p, y, weights), "events_per_s": n / best, "events_per_cpu_s": n / best_cpu,
            "events_per_s_with_hashing": n / (best + hash_s), "learner": repr(make())}


def _mixture(crosses: tuple = ()) -> LogisticMixture:
    """``event-mixture`` (the training job's ``model.rates = [1.0, 0.5]``), crossed or not."""
    return LogisticMixture(Normalized(0.5, invariant=False), rates=[1.0, 0.5], bits=BITS,
                           intercept_lr=None, crosses=crosses)


SYSTEMS = {
    "event-normalized": (lambda: LogisticRegression(Normalized(0.5), bits=BITS, update="event",
                                                    intercept_lr=None), None),
    "event-normalized-plain": (
        lambda: LogisticRegression(Normalized(0.5, invariant=False), bits=BITS, update="event",
                                   intercept_lr=None), None),
    "event-mixture": (_mixture, None),
    "event-adagrad": (lambda: LogisticRegression(AdaGrad(0.1), bits=BITS, update="event"), None),
    "batch-adagrad": (lambda: LogisticRegression(AdaGrad(0.1), bits=BITS), STEP),
}
#: VW's crosses and low-rank quadratic models, on the interactions stream
VW_INTERACTIONS = {"vw-q": "-q ff", "vw-lrq4": "--lrq ff4", "vw-lrq8": "--lrq ff8"}
#: the interactions stream's features, each a VW namespace of its own (a letter)
INTERACTION_FEATURES = ("ad", "country", "device", "hour", "segment", "site", "x0", "x1")
NAMESPACES = {name: "abcdefgh"[i] for i, name in enumerate(INTERACTION_FEATURES)}
#: VW's -q of the four interacting pairs, each feature in its own namespace
VW_PAIRS = " ".join(f"-q {NAMESPACES[a]}{NAMESPACES[b]}" for a, b in INTERACTION_PAIRS)


def _crossed(crosses: tuple) -> LogisticRegression:
    return LogisticRegression(Normalized(0.5), bits=BITS, update="event", intercept_lr=None,
                              crosses=crosses)


ALL_PAIRS = tuple(combinations(INTERACTION_FEATURES, 2))
#: our crossed learners, and the VW system each is compared with
CROSSED = {
    "crossed-all": (lambda: _crossed(ALL_PAIRS), "vw-q"),
    "crossed-pairs": (lambda: _crossed(INTERACTION_PAIRS), "vw-q-pairs"),
    "mixture-crossed-all": (lambda: _mixture(ALL_PAIRS), "vw-q"),
    "mixture-crossed-pairs": (lambda: _mixture(INTERACTION_PAIRS), "vw-q-pairs"),
}
#: our factorization machines, and the VW system each is compared with
FMS = {
    "fm-k4": (lambda: FMClassifier(Normalized(0.5, invariant=False), k=4, bits=BITS,
                                   intercept_lr=None, factor_optimizer=AdaGrad(0.2),
                                   init_std=0.1), "vw-lrq4"),
    "fm-k8": (lambda: FMClassifier(Normalized(0.5, invariant=False), k=8, bits=BITS,
                                   intercept_lr=None, factor_optimizer=AdaGrad(0.1),
                                   init_std=0.1), "vw-lrq8"),
}


def _empty(workdir: str) -> None:
    """Remove the files VW wrote in ``workdir`` for the stream before (its data and
    predictions), so that none is taken for the next one's."""
    for old in Path(workdir).glob("*"):
        old.unlink()


#: the systems ``--seeds`` compares with VW
SEED_SYSTEMS = ("event-normalized", "event-normalized-plain", "event-mixture")
#: the system of the goal: its log-loss at most VW's on every stream
GOAL_SYSTEM = "event-mixture"


def goal_loss(row: dict) -> float:
    """The log-loss a goal compares: weighted on a weighted stream (what both learners
    minimise, and VW's own progressive loss), else every event once."""
    return row.get("weighted_log_loss", row["log_loss"])


def seed_spread(sizes: dict[str, int], seeds: int, out: Path) -> None:
    """Log-loss over VW's, per stream (of ``sizes`` events) and seed: is one seed's ratio
    the rule?"""
    results: dict = {"seeds": seeds, "streams": {}}
    print(f"{'stream':<15} {'seed':>4} {'vw log-loss':>11} "
          + " ".join(f"{s + ' / vw':>28}" for s in SEED_SYSTEMS), flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        for name, n in sizes.items():
            rows = []
            for seed in range(seeds):
                xs, y, weights = load(name, n, seed)
                _empty(workdir)
                row = {"seed": seed, "vw": goal_loss(run_vw(xs, y, workdir, 1, weights=weights))}
                for system in SEED_SYSTEMS:
                    make, step = SYSTEMS[system]
                    row[system] = goal_loss(run_ours(make, xs, y, 1, step, weights)) / row["vw"]
                rows.append(row)
                print(f"{name:<15} {seed:>4} {row['vw']:>11.6f} "
                      + " ".join(f"{row[s]:>28.5f}" for s in SEED_SYSTEMS), flush=True)
            summary = {s: {"mean_vs_vw": float(np.mean([r[s] for r in rows])),
                           "seeds_at_most_vw": sum(r[s] <= 1.0 for r in rows)}
                       for s in SEED_SYSTEMS}
            results["streams"][name] = {"events": n, "rows": rows, "summary": summary}
            print(f"{name:<15} mean " + ", ".join(
                f"{s} {v['mean_vs_vw']:.5f} (at most VW's on {v['seeds_at_most_vw']} of {seeds})"
                for s, v in summary.items()))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clicks", type=int, default=300_000, help="events of clicks")
    parser.add_argument("--river", type=int, default=100_000,
                        help="events of each River stream")
    parser.add_argument("--interactions", type=int, default=300_000,
                        help="events of the interactions stream")
    parser.add_argument("--streams",
                        default="clicks,clicks-weighted,interactions,sea,hyperplane,agrawal")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs, best kept")
    parser.add_argument("--seeds", type=int, default=1,
                        help="K > 1: each stream with seeds 0 .. K-1, VW against our three "
                             "normalised learners only (log-loss ratios; see the docstring)")
    parser.add_argument("--out", default=None,
                        help="the JSON written (default bench/results/quality.json, or "
                             "quality_seeds.json with --seeds)")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error(f"--seeds: expected an integer >= 1, got {args.seeds}")
    default_out = "quality_seeds.json" if args.seeds > 1 else "quality.json"
    out = Path(args.out or Path(__file__).parent / "results" / default_out)
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})  # one core, for every system
    sizes = {name: {"clicks": args.clicks, "clicks-weighted": args.clicks,
                    "interactions": args.interactions}.get(name, args.river)
             for name in args.streams.split(",")}
    if args.seeds > 1:
        seed_spread(sizes, args.seeds, out)
        return

    results: dict = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform()},
        "settings": {"bundle": BUNDLE, "step": STEP, "bits": BITS, "repeats": args.repeats,
                     "pinned_to_core": core},
        "load_average_at_start": os.getloadavg(),
        "streams": {},
    }
    header = (f"{'stream':<15} {'system':<22} {'log-loss':>9} {'accuracy':>9} "
              f"{'ev/s':>11} {'ev/cpu-s':>11} {'ev/s+hash':>10} {'loss/ref':>8} {'speed/vw':>9}")
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as workdir:
        for name, n in sizes.items():
            xs, y, weights = load(name, n)
            _empty(workdir)
            rows = {"vw": run_vw(xs, y, workdir, args.repeats, weights=weights)}
            refs = {}
            if name == "interactions":
                for system, extra in VW_INTERACTIONS.items():
                    rows[system] = run_vw(xs, y, workdir, args.repeats, extra)
                rows["vw-q-pairs"] = run_vw(xs, y, workdir, args.repeats, VW_PAIRS,
                                            per_feature=True)
            for system, (make, step) in SYSTEMS.items():
                rows[system] = run_ours(make, xs, y, args.repeats, step, weights)
            if name == "interactions":
                for system, (make, ref) in {**CROSSED, **FMS}.items():
                    rows[system] = run_ours(make, xs, y, args.repeats, None)
                    refs[system] = ref
            vw = rows["vw"]
            for system, row in rows.items():
                ref = rows[refs.get(system, "vw")]
                row["log_loss_vs_ref"] = row["log_loss"] / ref["log_loss"]
                row["reference"] = refs.get(system, "vw")
                row["log_loss_vs_vw"] = row["log_loss"] / vw["log_loss"]
                row["speed_vs_vw"] = row["events_per_cpu_s"] / vw["events_per_cpu_s"]
                row["wall_speed_vs_vw"] = row["events_per_s"] / vw["events_per_s"]
                with_hash = row.get("events_per_s_with_hashing")
                print(f"{name:<15} {system:<22} {row['log_loss']:>9.4f} {row['accuracy']:>9.4f} "
                      f"{row['events_per_s']:>11,.0f} {row['events_per_cpu_s']:>11,.0f} "
                      f"{'' if with_hash is None else f'{with_hash:,.0f}':>10} "
                      f"{row['log_loss_vs_ref']:>8.4f} {row['speed_vs_vw']:>9.2f}")
            print(f"{'':<12} (vw's own progressive loss: {vw['vw_pv_loss']:.4f}; {n:,} events)")
            results["streams"][name] = {"events": n, "systems": rows}
            if name == "interactions":
                optimum = interactions_optimum(n, seed=0)
                results["streams"][name]["bayes_optimal_log_loss"] = optimum
                linear = rows["event-normalized"]["log_loss"]
                fm_goal = {s: {"beats_linear": rows[s]["log_loss"] < linear,
                               "vs_vw_lrq": rows[s]["log_loss_vs_ref"],
                               "within_1pct_of_vw_lrq": rows[s]["log_loss_vs_ref"] <= 1.01}
                           for s in FMS}
                results["goal_fm"] = fm_goal
                results["goal_crosses"] = {
                    s: {"vs_vw": rows[s]["log_loss_vs_ref"], "reference": ref,
                        "at_most_vw": rows[s]["log_loss_vs_ref"] <= 1.0}
                    for s, (_, ref) in CROSSED.items()
                }
                print(f"{'':<12} (the true model's log-loss, the Bayes optimum: {optimum:.4f})")
                for s, g in results["goal_crosses"].items():
                    print(f"{'':<12} {s}: log-loss / {g['reference']} {g['vs_vw']:.4f}")
                for s, g in fm_goal.items():
                    print(f"{'':<12} {s}: beats the linear learner {g['beats_linear']}, "
                          f"log-loss / VW {FMS[s][1]} {g['vs_vw_lrq']:.4f}")
    goal = {name: goal_loss(s["systems"][GOAL_SYSTEM]) <= goal_loss(s["systems"]["vw"])
            for name, s in results["streams"].items()}
    results["goal_system"] = GOAL_SYSTEM
    results["goal_log_loss_at_most_vw"] = goal
    print(f"{GOAL_SYSTEM}'s log-loss <= VW's (weighted on a weighted stream):",
          ", ".join(f"{k} {v}" for k, v in goal.items()))
    if "clicks" in results["streams"]:
        kernel = results["streams"]["clicks"]["systems"]["event-adagrad"]
        results["kernel_clicks_adagrad_events_per_cpu_s"] = kernel["events_per_cpu_s"]
        print(f"kernel on clicks, AdaGrad: {kernel['events_per_cpu_s']:,.0f} events per CPU "
              f"second, {kernel['events_per_s']:,.0f} per wall second (goal: 2,000,000)")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
