"""One-shot search on the DARTS-style and MobileNetV3-style spaces with digits.

For each space and method: search time, the exported architecture retrained from scratch
(its validation accuracy) next to the mean and best of 5 random architectures retrained
the same way, and the exported model's latency (timed: the fastest of 60 runs, batch 1, one thread). ProxylessNAS
runs without and with a latency target. Last, regularized evolution and random search
(multi-trial, each trial a full retrain) run until they match the best one-shot accuracy,
which gives their cost for the same accuracy.

``--planted`` runs the planted-answer spaces of ``oneshot_spaces.py`` instead: first every
architecture trained alone (the proof of the winner), then every method at its default
settings over 3 seeds, counting how often each exports the planted architecture.

    python benchmarks/oneshot.py            # about 15 minutes on 2 shared cores
    python benchmarks/oneshot.py --planted  # about 5 minutes
    python benchmarks/oneshot.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

# the repository root first: this folder's strategies.py must not hide the strategies package
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

import retiarii_ir
from retiarii_ir.space.hub import DartsSpace, MobileNetV3Space
from retiarii_ir.runtime.training.data import dataset
from retiarii_ir.strategies import Budget, Random, RegularizedEvolution, run_strategy
from retiarii_ir.strategies.oneshot import DARTS, ENAS, SPOS, LatencyTable, ProxylessNAS, Supernet

import oneshot_spaces  # noqa: E402 - this folder, after the root


def digits_rgb():
    """Digits as 3-channel 8x8 images (the reference spaces take RGB input)."""
    d = dataset("digits")
    return d.train_x.repeat(1, 3, 1, 1), d.train_y, d.val_x.repeat(1, 3, 1, 1), d.val_y


retrain = oneshot_spaces.train_alone  # one way of training an architecture alone, for both tables


def timed_latency_ms(space, sample, shape, repeats: int = 60) -> float:
    """Fastest forward time of the exported standalone model, batch 1, eval mode (the minimum
    over ``repeats`` runs: on shared cores it is the least disturbed by other work)."""
    model = retiarii_ir.build_module(space.freeze(sample)).eval()
    x = torch.randn(1, *shape)
    times = []
    with torch.no_grad():
        for _ in range(5):
            model(x)
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - start) * 1e3)
    return min(times)


def run_space(name: str, build, data, args) -> list[str]:
    train_x, train_y, val_x, val_y = data
    torch.manual_seed(0)
    model = build()
    space = retiarii_ir.trace_space(model, train_x[:2])
    shape = tuple(train_x.shape[1:])
    rows = []

    def report(method: str, sample, seconds: float | None, extra: str = "") -> float:
        acc = retrain(space, sample, data, args.retrain_epochs)
        ms = timed_latency_ms(space, sample, shape)
        search = f"{seconds:.1f}" if seconds is not None else "-"
        rows.append(f"| {name} | {method} | {search} | {acc:.3f} | {ms:.3f} | {extra} |")
        print(rows[-1], file=sys.stderr, flush=True)
        return acc

    randoms = [space.random_sample(1000 + i) for i in range(5)]
    started = time.perf_counter()
    random_accs = [retrain(space, s, data, args.retrain_epochs) for s in randoms]
    retrain_seconds = (time.perf_counter() - started) / len(randoms)
    random_ms = [timed_latency_ms(space, s, shape) for s in randoms]
    rows.append(f"| {name} | 5 random architectures | - | mean {statistics.mean(random_accs):.3f}, "
                f"best {max(random_accs):.3f} | mean {statistics.mean(random_ms):.3f} | "
                f"{retrain_seconds:.1f} s per retrain |")
    print(rows[-1], file=sys.stderr, flush=True)

    common = dict(batch_size=args.batch_size, seed=0, progress=True)
    epochs = args.darts_epochs if name == "darts" else args.epochs
    accs = {}
    for method, make in [
        ("DARTS (first order)", lambda m: DARTS(space, m, epochs=epochs, arch_lr=0.01, **common)),
        ("ENAS", lambda m: ENAS(space, m, epochs=args.epochs, **common)),
        ("SPOS", lambda m: SPOS(space, m, epochs=args.epochs, population=args.population,
                                generations=args.generations, **common)),
        ("ProxylessNAS", lambda m: ProxylessNAS(space, m, epochs=args.epochs, **common)),
    ]:
        torch.manual_seed(0)
        search = make(model).fit(train_x, train_y)
        extra = ""
        if method.startswith("DARTS"):
            epochs_run = [r for r in search.history if "max_prob" in r]
            extra = f"mean max probability {epochs_run[0]['max_prob']:.3f} -> {epochs_run[-1]['max_prob']:.3f}"
        accs[method] = report(method, search.export(), search.search_seconds, extra)
        if method == "ProxylessNAS":
            free = search.export()

    table = LatencyTable.measure(Supernet(space, model), train_x[:1])
    print(table.report(), file=sys.stderr, flush=True)
    measured = [p["measured_ms"] for p in table.calibration.points]
    summed = [p["summed_ms"] for p in table.calibration.points]
    rows.append(f"| {name} | latency table | - | - | summed ops {statistics.mean(summed):.3f}, calibrated "
                f"{statistics.mean(table.calibration(x) for x in summed):.3f}, measured whole "
                f"{statistics.mean(measured):.3f} | mean of {len(measured)} architectures; "
                f"measured = {table.calibration.scale:.3f} x summed + {table.calibration.offset:.3f} |")
    free_table_ms = table.of_sample(free)
    target = args.latency_fraction * free_table_ms
    torch.manual_seed(0)
    started = time.perf_counter()
    fast = ProxylessNAS(space, model, epochs=args.epochs, latency_target_ms=target, latency_table=table,
                        latency_weight=args.latency_weight, **common).fit(train_x, train_y)
    seconds = time.perf_counter() - started
    report(f"ProxylessNAS, latency target {target:.3f} ms", fast.export(), seconds,
           f"table: {table.of_sample(fast.export()):.3f} ms vs {free_table_ms:.3f} ms without target; "
           f"table built in {table_seconds(table)}")

    goal = max(accs.values())
    for strategy_cls in (RegularizedEvolution, Random):
        strategy = strategy_cls(space, seed=0)
        started = time.perf_counter()
        reached = None

        def evaluate(sample):
            nonlocal reached
            acc = retrain(space, sample, data, args.retrain_epochs)
            if reached is None and acc >= goal:
                reached = (len(strategy.history) + 1, time.perf_counter() - started)
            return acc

        run_strategy(strategy, evaluate, Budget(max_trials=args.max_trials))
        best = strategy.best().metric
        text = (f"reached {goal:.3f} after {reached[0]} trials, {reached[1]:.1f} s" if reached else
                f"did not reach {goal:.3f} in {args.max_trials} trials ({time.perf_counter() - started:.1f} s)")
        rows.append(f"| {name} | multi-trial {strategy_cls.__name__} | - | best {best:.3f} | - | {text} |")
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


PLANTED_METHODS = {
    "DARTS": lambda space, model, seed: DARTS(space, model, seed=seed),
    "DARTS (second order)": lambda space, model, seed: DARTS(space, model, seed=seed, unrolled=True),
    "ENAS": lambda space, model, seed: ENAS(space, model, seed=seed),
    "SPOS": lambda space, model, seed: SPOS(space, model, seed=seed),
    "ProxylessNAS": lambda space, model, seed: ProxylessNAS(space, model, seed=seed),
}


def run_planted(name: str, args) -> list[str]:
    """The winner proved by training every architecture alone, then each method over seeds."""
    space, model, data, planted = oneshot_spaces.build(name)
    started = time.perf_counter()
    proof = oneshot_spaces.prove(name, seeds=args.proof_seeds, epochs=args.alone_epochs)
    print(f"{name}: every architecture trained alone ({time.perf_counter() - started:.0f} s), best first:",
          file=sys.stderr)
    for acc, accs, sample in proof.scored[:4]:
        print(f"  {acc:.3f} ({', '.join(f'{a:.3f}' for a in accs)})  {sample}", file=sys.stderr)
    (best, _, _), (runner_up, _, second) = proof.scored[:2]
    spread = f"margin {proof.margin:.3f}, {proof.margin / proof.standard_error:.1f} standard errors" \
        if proof.standard_error else f"margin {proof.margin:.3f}"
    if not proof.holds(space.validate(planted)):
        if args.quick:  # a smoke run trains too little to prove anything
            print(f"{name}: no proof at --quick settings", file=sys.stderr)
        else:
            raise SystemExit(f"{name}: trained alone, the planted answer {planted} is not ahead of every other "
                             f"architecture by more than 2 standard errors: best {proof.scored[0][2]} {best:.3f}, "
                             f"then {second} {runner_up:.3f} ({spread})")
    rows = [f"| {name} | trained alone | planted {_short(planted)}: {best:.3f}; runner-up {_short(second)}: "
            f"{runner_up:.3f} ({spread}) | - | - | {len(proof.scored)} architectures x {args.proof_seeds} seeds, "
            f"{args.alone_epochs} epochs |"]
    train_x, train_y = data[0], data[1]
    for method, make in PLANTED_METHODS.items():
        found, seconds, accs, exports = 0, [], [], []
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            search = make(space, model, seed).fit(train_x, train_y)
            sample = search.export()
            hit = space.validate(sample) == space.validate(planted)
            found += hit
            seconds.append(search.search_seconds)
            accs.append(oneshot_spaces.train_alone(space, sample, data, args.alone_epochs))
            if not hit:
                exports.append(_short(sample))
            print(f"{name} {method} seed {seed}: {'found' if hit else 'missed'} {sample} "
                  f"({search.search_seconds:.1f} s)", file=sys.stderr, flush=True)
        rows.append(f"| {name} | {method} | {found}/{args.seeds} | {statistics.mean(seconds):.1f} | "
                    f"{statistics.mean(accs):.3f} | {'; '.join(exports) or '-'} |")
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def _short(sample) -> str:
    return ", ".join(f"{k}={v}" for k, v in sample.items())


def planted_main(args) -> None:
    started = time.perf_counter()
    rows = ["| space | method | found the planted architecture | search s (mean) | its export trained alone "
            "(val. accuracy, mean) | missed exports |", "|---|---|---|---|---|---|"]
    for name in args.planted_spaces.split(","):
        rows += run_planted(name, args)
    print("\n".join(rows))
    print(f"\ntotal {time.perf_counter() - started:.0f} s; torch {torch.__version__}, 1 thread; every method at its "
          f"default settings, seeds 0..{args.seeds - 1}")


def table_seconds(table: LatencyTable) -> str:
    return f"{len(table.entries)} ops"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few steps of everything (smoke test)")
    parser.add_argument("--spaces", default="darts,mobilenetv3")
    parser.add_argument("--epochs", type=int, default=6, help="search epochs (ENAS, SPOS, ProxylessNAS; DARTS on "
                                                               "MobileNetV3)")
    parser.add_argument("--darts-epochs", type=int, default=3, help="DARTS epochs on the DARTS cell space")
    parser.add_argument("--retrain-epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--generations", type=int, default=3)
    parser.add_argument("--latency-fraction", type=float, default=0.6, help="target = this x the unconstrained "
                                                                              "export's table latency")
    parser.add_argument("--latency-weight", type=float, default=2.0)
    parser.add_argument("--max-trials", type=int, default=10)
    parser.add_argument("--planted", action="store_true", help="the planted-answer spaces, every method at its "
                                                               "default settings")
    parser.add_argument("--planted-spaces", default=",".join(oneshot_spaces.SPACES))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--proof-seeds", type=int, default=3, help="seeds of each architecture trained alone")
    parser.add_argument("--alone-epochs", type=int, default=12, help="epochs of an architecture trained alone")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.darts_epochs, args.retrain_epochs, args.max_trials = 1, 1, 1, 2
        args.population, args.generations = 2, 1
    torch.set_num_threads(1)
    if args.planted:
        if args.quick:
            args.seeds, args.proof_seeds, args.alone_epochs = 1, 1, 1
        return planted_main(args)
    data = digits_rgb()
    spaces = {"darts": lambda: DartsSpace(c=4, num_nodes=2), "mobilenetv3": MobileNetV3Space}
    started = time.perf_counter()
    rows = ["| space | method | search s | retrained val. accuracy | latency ms (batch 1) | notes |",
            "|---|---|---|---|---|---|"]
    for name in args.spaces.split(","):
        rows += run_space(name, spaces[name], data, args)
    print("\n".join(rows))
    print(f"\ntotal {time.perf_counter() - started:.0f} s; torch {torch.__version__}, 1 thread")


if __name__ == "__main__":
    main()
