"""Training: objectives, optimizer, train step, loop. `python -m research.train` is the CLI."""
