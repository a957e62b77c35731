"""`python -m experiments.bench SUBCOMMAND [--size tiny|cpu|full] [--out DIR] [--reps N]`

Each subcommand is a module of this package with `SIZES` (size name -> settings) and
`run(size, reps) -> list[dict]`, one dict per table row. The dispatcher prints the rows as a
table and writes them, with the machine they were measured on, to `OUT/SUBCOMMAND-SIZE.json`.
Timings are medians over repetitions after warm-up; competing implementations are timed
alternately in the same process, so a load that comes and goes affects both alike.
"""

SUBCOMMANDS = {
    "peak": "experiments.bench.peak",
    "train": "experiments.bench.train",
    "decode": "experiments.bench.decode",
    "compile": "experiments.bench.compile",
}
