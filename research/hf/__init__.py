"""Hugging Face checkpoint interop: load `save_pretrained` directories, write ones transformers
loads.

    from research import hf
    model, params = hf.load("path/to/checkpoint")        # safetensors only
    hf.save(model, params, "out")     # then AutoModelForCausalLM.from_pretrained("out")
    tokenizer = hf.load_tokenizer("path/to/checkpoint")  # = research.tokenizers.load

One module per HF family registers its converters (config mapping and tensor table, both
ways); the import order below is the order `config_to_hf` tries model types in, so a
ModelConfig that several types express is written as the first of them.
"""

from research.hf import llama, gpt2, neox, falcon, bloom, mixtral  # noqa: F401  (registration, in order)
from research.hf import bert, albert  # noqa: F401  (encoder-only: bert, roberta, albert)
from research.hf import t5, switch  # noqa: F401  (encoder-decoder types)
from research.hf.convert import config_from_hf, config_to_hf, load, save
from research.hf.errors import ConversionError
from research.hf.registry import supported
from research.tokenizers import load as load_tokenizer

__all__ = ["ConversionError", "config_from_hf", "config_to_hf", "load", "load_tokenizer", "save",
           "supported"]
