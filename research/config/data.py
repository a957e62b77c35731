"""`TokenizerConfig`, `SyntheticConfig` and `DataConfig`: what text a run trains on and how.

`DataConfig` names a source (a registered dataset, a built-in synthetic task or a local text
file), the tokenizer to build for it, and how token streams become batches (sequence length,
global batch size, packing, the validation split, the shuffle seed).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
from typing import Any

from research.config import validate

TOKENIZER_KINDS = (
    "char", "sentencepiece_bpe", "sentencepiece_unigram", "bytelevel_bpe", "wordpiece", "file",
)
# Kinds whose vocabulary is learned from the corpus up to `vocab_size` entries.
TRAINED_KINDS = ("sentencepiece_bpe", "sentencepiece_unigram", "bytelevel_bpe", "wordpiece")
SENTENCEPIECE_KINDS = ("sentencepiece_bpe", "sentencepiece_unigram")

# Roles a special token can play, recognised by its symbol. A tokenizer's pad/bos/eos/...
# ids are the ids of these symbols; files from Hugging Face checkpoints name their roles in
# tokenizer_config.json instead, which research.tokenizers.pretrained reads first.
ROLE_SYMBOLS: dict[str, tuple[str, ...]] = {
    "pad": ("<pad>", "[PAD]", "<|pad|>"),
    "bos": ("<s>", "<bos>", "[BOS]", "<|begin_of_text|>", "<|startoftext|>"),
    "eos": ("</s>", "<eos>", "[EOS]", "<|endoftext|>", "<|end_of_text|>"),
    "unk": ("<unk>", "[UNK]", "<|unk|>"),
    "sep": ("<sep>", "[SEP]"),
    "mask": ("<mask>", "[MASK]"),
    "cls": ("<cls>", "[CLS]"),
}
ROLES = tuple(ROLE_SYMBOLS)

# Each kind's special tokens when `special_tokens` is unset; token i gets id i.
DEFAULT_SPECIAL_TOKENS: dict[str, tuple[str, ...]] = {
    "char": ("<pad>", "<s>", "</s>"),
    # SentencePiece always needs an unknown piece; LLaMA's order, then padding.
    "sentencepiece_bpe": ("<unk>", "<s>", "</s>", "<pad>"),
    "sentencepiece_unigram": ("<unk>", "<s>", "</s>", "<pad>"),
    # RoBERTa's symbols; byte-level BPE encodes every byte, so it needs no unknown token.
    "bytelevel_bpe": ("<s>", "<pad>", "</s>", "<mask>"),
    # BERT's: [SEP] separates documents, there is no bos/eos.
    "wordpiece": ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"),
    "file": (),
}

LOSS_ON = ("all", "answer")
# Sentence-pair rows for encoder pretraining (research/data/pairs.py).
PAIRS = ("none", "nsp", "sop")
# Placeholders of `DataConfig.template` besides {prompt} and {response}: the tokenizer's
# special tokens of these roles.
TEMPLATE_TOKENS = ("sep", "bos", "eos")


def check_template(template: str, where: str) -> None:
  """Raises unless {prompt} and {response} occur once each, in that order, and every other
  placeholder is one of TEMPLATE_TOKENS."""
  found = re.findall(r"\{(\w+)\}", template)
  for name in found:
    if name not in ("prompt", "response", *TEMPLATE_TOKENS):
      raise ValueError(f"{where}={template!r}: unknown placeholder {{{name}}}; allowed: {{prompt}}, "
                       "{response}, " + ", ".join(f"{{{t}}}" for t in TEMPLATE_TOKENS))
  if found.count("prompt") != 1 or found.count("response") != 1:
    raise ValueError(f"{where}={template!r} must hold {{prompt}} and {{response}} exactly once each")
  if template.index("{prompt}") > template.index("{response}"):
    raise ValueError(f"{where}={template!r}: {{prompt}} must come before {{response}}")


def role_of(symbol: str) -> str | None:
  """The role a special-token symbol plays by name (`'</s>'` -> `'eos'`), or None."""
  for role, symbols in ROLE_SYMBOLS.items():
    if symbol in symbols:
      return role
  return None


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
  """Which tokenizer to train on the corpus, or which file to load.

  kind: `char` (one token per character of the corpus), `sentencepiece_bpe`,
  `sentencepiece_unigram`, `bytelevel_bpe` (GPT-2/RoBERTa), `wordpiece` (BERT), or `file`
  (a sentencepiece `.model`, a `tokenizer.json`, or a directory holding one, loaded as is;
  also a directory `Tokenizer.save` wrote, such as a run's `tokenizer/`).
  """

  kind: str = "char"
  # Learned vocabulary size, special tokens included; required by the trained kinds. `char`
  # takes its size from the corpus and `file` from the file, so both leave it unset.
  vocab_size: int | None = None
  path: str | None = None
  # SentencePiece: characters outside the vocabulary become their UTF-8 bytes (256 byte
  # pieces), so every string round-trips; without it they become <unk>.
  byte_fallback: bool = True
  # Special-token symbols, token i getting id i; None: DEFAULT_SPECIAL_TOKENS[kind]. Roles
  # (pad, bos, eos, ...) come from the symbols' names (ROLE_SYMBOLS); others are plain
  # user-defined symbols (e.g. chat markers).
  special_tokens: tuple[str, ...] | None = None
  # SentencePiece: the fraction of characters the vocabulary must cover; the rarest rest go
  # to bytes (byte_fallback) or <unk>. 0.9995 is SentencePiece's advice for CJK text.
  character_coverage: float = 0.9995
  # WordPiece: lowercase before splitting (BERT uncased).
  lowercase: bool = False

  def __post_init__(self):
    own = type(self).__name__
    validate.choice(own, "kind", self.kind, TOKENIZER_KINDS)
    if self.kind in TRAINED_KINDS:
      if self.vocab_size is None:
        raise ValueError(f"{own}.vocab_size is required for kind={self.kind!r}")
      validate.positive(own, "vocab_size", self.vocab_size)
    elif self.vocab_size is not None:
      raise ValueError(
          f"{own}.vocab_size={self.vocab_size!r} does not apply to kind={self.kind!r} "
          "(its vocabulary comes from the " + ("corpus" if self.kind == "char" else "file")
          + "); leave it unset"
      )
    if self.kind == "file":
      if not self.path:
        raise ValueError(f"{own}.path is required for kind='file'")
      if self.special_tokens is not None:
        raise ValueError(
            f"{own}.special_tokens={self.special_tokens!r} does not apply to kind='file' "
            "(the file's own special tokens are used); leave it unset"
        )
    elif self.path is not None:
      raise ValueError(f"{own}.path={self.path!r} only applies to kind='file'")
    validate.in_range(own, "character_coverage", self.character_coverage, 1e-6, 1.0)
    specials = self.specials()
    if any(not isinstance(s, str) or not s for s in specials):
      raise ValueError(f"{own}.special_tokens={specials!r} must be non-empty strings")
    if len(set(specials)) != len(specials):
      raise ValueError(f"{own}.special_tokens={specials!r} has duplicates")
    roles = [role_of(s) for s in specials]
    for role in ROLES:
      if roles.count(role) > 1:
        raise ValueError(
            f"{own}.special_tokens={specials!r} has several {role} symbols; keep one of "
            + ", ".join(repr(s) for s in ROLE_SYMBOLS[role])
        )
    if self.kind in SENTENCEPIECE_KINDS + ("wordpiece",) and "unk" not in roles:
      raise ValueError(
          f"{own}.special_tokens={specials!r}: kind={self.kind!r} needs an unknown-token "
          "symbol, one of " + ", ".join(repr(s) for s in ROLE_SYMBOLS["unk"])
      )
    if self.kind in TRAINED_KINDS:
      # The learned pieces come on top of the specials and the base alphabet.
      base = 256 if (self.kind == "bytelevel_bpe" or (
          self.kind in SENTENCEPIECE_KINDS and self.byte_fallback)) else 0
      need = base + len(specials) + 1
      if self.vocab_size < need:
        raise ValueError(
            f"{own}.vocab_size={self.vocab_size} is too small for kind={self.kind!r}: it "
            f"needs at least {need} ({base} byte pieces, {len(specials)} special tokens, "
            "and one learned piece)"
        )

  def specials(self) -> tuple[str, ...]:
    """The special-token symbols in id order (the kind's default when unset)."""
    if self.special_tokens is None:
      return DEFAULT_SPECIAL_TOKENS[self.kind]
    return tuple(self.special_tokens)

  def to_dict(self) -> dict[str, Any]:
    return validate.to_dict(self)

  @classmethod
  def from_dict(cls, values: dict[str, Any]) -> "TokenizerConfig":
    return validate.from_dict(cls, values)


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  """Sizes of the built-in synthetic tasks (research.data.synthetic).

  The length of an example is the number of symbols to copy, of key-value pairs to recall
  from, or of operands to add. Validation examples may use other lengths, for length
  extrapolation: train on 4..16 and validate on 17..32.
  """

  num_examples: int = 10000
  min_len: int = 4
  max_len: int = 16
  # None: the training lengths.
  val_min_len: int | None = None
  val_max_len: int | None = None
  # Symbols copied, and recall keys: the first `alphabet` lowercase letters.
  alphabet: int = 26
  modulus: int = 97
  # Seeds the examples themselves; DataConfig.seed seeds only their order.
  seed: int = 0

  def __post_init__(self):
    own = type(self).__name__
    for name in ("num_examples", "min_len", "max_len", "modulus"):
      validate.positive(own, name, getattr(self, name))
    validate.in_range(own, "alphabet", self.alphabet, 2, 26)
    for name in ("val_min_len", "val_max_len"):
      if getattr(self, name) is not None:
        validate.positive(own, name, getattr(self, name))
    for val, prefix in ((False, ""), (True, "val_")):
      lo, hi = self.lengths(val)
      if lo > hi:
        raise ValueError(
            f"{own}.{prefix}min_len={lo} must be <= {own}.{prefix}max_len={hi}"
            + (" (an unset val_ length is the training one)" if val else "")
        )

  def lengths(self, val: bool = False) -> tuple[int, int]:
    """(min, max) example length of the training or the validation split."""
    if not val:
      return self.min_len, self.max_len
    lo = self.min_len if self.val_min_len is None else self.val_min_len
    hi = self.max_len if self.val_max_len is None else self.val_max_len
    return lo, hi


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Source, tokenizer and batching of the training data."""

  # A registered dataset (research.data.sources) or synthetic task (research.data.synthetic).
  dataset: str = "tinyshakespeare"
  # Any local UTF-8 text file, one document; set, it replaces `dataset`. A `.jsonl` file holds
  # one prompt/response record per line instead (supervised fine-tuning).
  path: str | None = None
  tokenizer: TokenizerConfig = dataclasses.field(default_factory=TokenizerConfig)
  seq_len: int = 256
  # Global batch: rows per step over all hosts.
  batch_size: int = 64
  # A text file's last `val_fraction` of tokens (one contiguous region); of a synthetic
  # task, that fraction of its examples.
  val_fraction: float = 0.1
  # Seeds the order of training rows (and each epoch's window offset).
  seed: int = 0
  # True: documents joined with EOS into one stream cut into seq_len + 1 windows, with
  # segment_ids telling them apart. False: one document per row, padded.
  pack: bool = True
  # Prepend the tokenizer's BOS (when it has one) to every document.
  add_bos: bool = True
  # Which targets carry loss: "all", or "answer" (the responses of question/answer tasks).
  loss_on: str = "all"
  # How a prompt/response pair becomes one document (research.data.prompt_response): {prompt} and
  # {response} in order, literal text, special-token symbols of the tokenizer, and {sep},
  # {bos}, {eos}; the document ends with EOS. The answer (loss_on="answer") runs from the first
  # token of {response} through the EOS. None: "{prompt}{response}" for the synthetic tasks
  # (their prompts end in "="), "{prompt}{sep}{response}" for JSONL files.
  template: str | None = None
  # The fields of a JSONL record.
  prompt_field: str = "prompt"
  response_field: str = "response"
  # Packed rows: False keeps attention inside each document (segment_ids); True lets every
  # token attend to the earlier documents of its row too (GPT-2-style packing), with positions
  # running on across the row. The loss masks are the same either way.
  cross_document_attention: bool = False
  synthetic: SyntheticConfig = dataclasses.field(default_factory=SyntheticConfig)
  # None: $RESEARCH_CACHE_DIR, else ~/.cache/research.
  cache_dir: str | None = None
  # ---- Sentence pairs (encoder pretraining, research/data/pairs.py) ----
  # A text file becomes one document per non-empty line (the sentences pairs are made of); the
  # last val_fraction of the lines validate.
  split_lines: bool = False
  # Rows [CLS] A [SEP] B [SEP] of consecutive documents (sentences) with token types and a
  # pair label: "nsp", B follows A or (half the rows) is text from elsewhere (Devlin et al.
  # 2019); "sop", B follows A, the two swapped in half the rows (Lan et al. 2020). Needs
  # pack=False: a row is built from an anchor document, not cut from the packed stream.
  pairs: str = "none"

  def __post_init__(self):
    own = type(self).__name__
    if not self.dataset and not self.path:
      raise ValueError(f"{own}.dataset is empty and no {own}.path is given")
    for name in ("seq_len", "batch_size"):
      validate.positive(own, name, getattr(self, name))
    validate.in_range(own, "val_fraction", self.val_fraction, 0.0, 0.99)
    validate.choice(own, "loss_on", self.loss_on, LOSS_ON)
    validate.choice(own, "pairs", self.pairs, PAIRS)
    if self.pairs != "none":
      if self.pack:
        raise ValueError(f"{own}.pairs={self.pairs!r} builds each row from an anchor document; "
                         f"set {own}.pack=False")
      if self.loss_on != "all":
        raise ValueError(f"{own}.pairs={self.pairs!r} has no answer tokens; use loss_on='all'")
      if self.seq_len < 5:
        raise ValueError(f"{own}.seq_len={self.seq_len} cannot hold [CLS] A [SEP] B [SEP]")
    if self.template is not None:
      check_template(self.template, f"{own}.template")
    for name in ("prompt_field", "response_field"):
      if not getattr(self, name):
        raise ValueError(f"{own}.{name} is empty")
    for name, cls in (("tokenizer", TokenizerConfig), ("synthetic", SyntheticConfig)):
      if not isinstance(getattr(self, name), cls):
        raise ValueError(
            f"{own}.{name} must be a {cls.__name__}, got {type(getattr(self, name)).__name__}"
        )

  @property
  def is_jsonl(self) -> bool:
    return bool(self.path) and self.path.endswith(".jsonl")

  @property
  def source_name(self) -> str:
    """The path when one is given, else the dataset name."""
    return self.path if self.path else self.dataset

  def resolved_cache_dir(self) -> pathlib.Path:
    if self.cache_dir:
      return pathlib.Path(self.cache_dir).expanduser()
    env = os.environ.get("RESEARCH_CACHE_DIR")
    if env:
      return pathlib.Path(env).expanduser()
    return pathlib.Path("~/.cache/research").expanduser()

  def to_dict(self) -> dict[str, Any]:
    return validate.to_dict(self)

  @classmethod
  def from_dict(cls, values: dict[str, Any]) -> "DataConfig":
    return validate.from_dict(cls, values)

  def replace(self, **changes: Any) -> "DataConfig":
    return dataclasses.replace(self, **changes)
