"""Model families. `registry.build(cfg)` returns the Flax module for any ModelConfig."""
