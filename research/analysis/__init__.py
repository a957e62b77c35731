"""Looking inside a trained model: intermediates, per-layer statistics, the logit lens, plots.

    from research import analysis
    loaded = analysis.load("runs/default")                  # or an HF checkpoint directory
    trace = analysis.capture(loaded.model, loaded.params, ids)
    stats = analysis.layer_stats(trace)                      # norms, attention entropy/distance
    lens = analysis.logit_lens(trace, loaded.params)         # each layer through the unembedding
    fig = analysis.plots.attention_maps(trace, tokens=[...])
"""

from research.analysis import plots
from research.analysis.capture import Trace, capture, per_layer
from research.analysis.load import Loaded, load
from research.analysis.logit_lens import Lens, logit_lens, unembed
from research.analysis.stats import attention_distance, attention_entropy, layer_stats

__all__ = ["Lens", "Loaded", "Trace", "attention_distance", "attention_entropy", "capture", "layer_stats",
           "load", "logit_lens", "per_layer", "plots", "unembed"]
