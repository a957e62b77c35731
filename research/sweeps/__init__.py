"""Sweeps as data: points over a base config, validated up front, run, tabulated, compared, plotted.

    from research.sweeps import hyper, Sweep, Measure, Tune, log_grid, runner, report
    sweep = Sweep(name="lr", size="quick", base=registry.get("smoke"),
                  points=hyper.product([hyper.sweep("optimizer.lr", [1e-3, 3e-3]), hyper.seeds(3)]))
    tuned = Sweep(name="act", size="quick", base=registry.get("smoke"),
                  points=hyper.sweep("model.activation", ["gelu", "swiglu"]),
                  tune=Tune(values=log_grid(1e-3, 3e-2)), reference="activation=gelu")
    runner.run(tuned, root="runs/sweeps")          # grid, then seeds at each best; resumes
    report.write("runs/sweeps/act/quick")          # tables, summary with verdicts, plots

Ready-made sweeps are declared in experiments/sweeps/ and run with `python -m experiments.sweep`.
"""

from research.sweeps import hyper
from research.sweeps.check import Problem, SweepError, point_configs
from research.sweeps.spec import SIZES, Measure, Sweep
from research.sweeps.tuning import Tune, log_grid

__all__ = ["SIZES", "Measure", "Problem", "Sweep", "SweepError", "Tune", "hyper", "log_grid",
           "point_configs"]
