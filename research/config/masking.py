"""`MaskingConfig`: how the masked-LM objectives corrupt their inputs (research/train/masking.py).

    TrainConfig(objective="mlm", mlm=MaskingConfig(mode="dynamic", whole_word=True))
    python -m research.train ... train.mlm.strategy=macbert train.mlm.similar_table=syn.json
"""

from __future__ import annotations

import dataclasses
from typing import Any

from research.config import validate

MODES = ("static", "dynamic")
STRATEGIES = ("bert", "macbert")


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
  # Fraction of each sequence's maskable tokens (never [CLS], [SEP], padding or other special
  # tokens) selected for prediction: round(select_prob * count), at least one (Devlin et al.
  # 2019, section 3.1 and appendix A.1: 15%).
  select_prob: float = 0.15
  # Of the selected tokens: this fraction is replaced (by [MASK]; by a similar token for
  # MacBERT), `random_prob` by a random token, and the rest kept unchanged: BERT's and
  # MacBERT's 80/10/10.
  replace_prob: float = 0.8
  random_prob: float = 0.1
  # "static": a sequence is masked the same way every epoch, as BERT's preprocessing does once;
  # "dynamic": a fresh mask every epoch (RoBERTa, Liu et al. 2019, section 4.1).
  mode: str = "dynamic"
  # Select whole words: every piece of a chosen word is predicted (BERT's whole word masking;
  # Cui et al. 2019 for Chinese).
  whole_word: bool = False
  # "bert": replaced tokens become [MASK]. "macbert": they become a similar token (MacBERT,
  # Cui et al. 2020, section 3.2: "MLM as correction"), a random one where none is known.
  strategy: str = "bert"
  # MacBERT's similarity: a JSON file {"token": ["similar token", ...]} (entries that are not
  # single tokens of the vocabulary are skipped), or a .npy [vocab, dim] embedding matrix whose
  # cosine nearest neighbours are the similar tokens. Exactly one of them for "macbert".
  similar_table: str | None = None
  similar_embeddings: str | None = None
  # A replaced token becomes one of its `similar_top_k` most similar tokens, uniformly.
  similar_top_k: int = 5
  # At most this many predictions per sequence (BERT's max_predictions_per_seq); None: no cap.
  max_predictions: int | None = None

  def __post_init__(self):
    own = type(self).__name__
    validate.in_range(own, "select_prob", self.select_prob, 1e-6, 1.0)
    validate.in_range(own, "replace_prob", self.replace_prob, 0.0, 1.0)
    validate.in_range(own, "random_prob", self.random_prob, 0.0, 1.0)
    if self.replace_prob + self.random_prob > 1.0 + 1e-9:
      raise ValueError(f"{own}.replace_prob={self.replace_prob} + {own}.random_prob="
                       f"{self.random_prob} exceeds 1")
    validate.choice(own, "mode", self.mode, MODES)
    validate.choice(own, "strategy", self.strategy, STRATEGIES)
    validate.positive(own, "similar_top_k", self.similar_top_k)
    if self.max_predictions is not None:
      validate.positive(own, "max_predictions", self.max_predictions)
    sources = [n for n in ("similar_table", "similar_embeddings") if getattr(self, n)]
    if self.strategy == "macbert" and len(sources) != 1:
      raise ValueError(f"{own}.strategy='macbert' needs exactly one of {own}.similar_table or "
                       f"{own}.similar_embeddings (got {sources or 'neither'})")
    if self.strategy != "macbert" and sources:
      raise ValueError(f"{own}.{sources[0]} only applies to strategy='macbert'")

  def to_dict(self) -> dict[str, Any]:
    return validate.to_dict(self)
