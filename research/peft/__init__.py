"""Parameter-efficient fine-tuning: methods that train a few parameters of their own and leave
the base model frozen, for any model family, without editing its code (research.peft.core).

```python
from research import peft
from research.config.peft import PeftConfig

tuned = peft.build(PeftConfig(method="lora", rank=8, targets=("q", "v")), base_model)
trainable = nn.unbox(tuned.init(rng))                  # what the optimizer trains
params = tuned.combine(base_params, trainable)         # what tuned.model applies
logits = tuned.model.apply({"params": params}, input_ids=ids)
peft.save_adapter("out/adapter", tuned, trainable, base="runs/base")
model, params = research.pretrained.restore_adapter("out/adapter")   # base joined back
```

| method | file | trains |
|---|---|---|
| `lora` | lora.py | A [*in, r], B [r, *out] per targeted projection (Hu et al. 2021) |
| `prefix` | prefix.py | K/V prefixes per layer, through an MLP while training (Li & Liang 2021) |
| `prompt` | prompt.py | a soft prompt prepended to the input (Lester et al. 2021) |
| `adapter` | adapters.py | bottleneck MLPs after attention and FFN (Houlsby et al. 2019) |
| `llama_adapter` | llama_adapter.py | gated adaption prompts in the top layers (Zhang et al. 2023) |
"""

from __future__ import annotations

from research.config.peft import PeftConfig
from research.peft import core
from research.peft.adapters import Adapters
from research.peft.core import Peft, PeftModel
from research.peft.io import load_adapter, save_adapter
from research.peft.llama_adapter import LlamaAdapter
from research.peft.lora import LoRA
from research.peft.prefix import PrefixTuning
from research.peft.prompt import PromptTuning

# Kept in step with research.config.peft.METHODS (tests/test_peft.py checks).
METHODS: dict[str, type[core.Method]] = {
    "lora": LoRA,
    "prefix": PrefixTuning,
    "prompt": PromptTuning,
    "adapter": Adapters,
    "llama_adapter": LlamaAdapter,
}

__all__ = ["METHODS", "Peft", "PeftModel", "build", "load_adapter", "save_adapter"]


def build(cfg: PeftConfig, base) -> Peft:
  """`cfg.method` bound to `base` (a Flax module of any family)."""
  if cfg.method not in METHODS:
    raise ValueError(f"peft.method={cfg.method!r} is not one of: {', '.join(METHODS)}")
  return core.bind(METHODS[cfg.method], cfg, base)
