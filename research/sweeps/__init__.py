"""Sweeps as data: points over a base config, validated up front, run, tabulated, plotted.

    from research.sweeps import hyper, Sweep, Measure, runner, report
    sweep = Sweep(name="lr", size="cpu", base=registry.get("smoke"),
                  points=hyper.product([hyper.sweep("optimizer.lr", [1e-3, 3e-3]), hyper.seeds(2)]))
    runner.run(sweep, root="runs/sweeps")          # skips finished points on re-run
    report.write("runs/sweeps/lr/cpu")             # results.csv/.jsonl and the plots

Ready-made sweeps are declared in experiments/sweeps/ and run with `python -m experiments.sweep`.
"""

from research.sweeps import hyper
from research.sweeps.check import Problem, SweepError, point_configs
from research.sweeps.spec import SIZES, Measure, Sweep

__all__ = ["SIZES", "Measure", "Problem", "Sweep", "SweepError", "hyper", "point_configs"]
