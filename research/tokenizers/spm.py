"""SentencePiece tokenizers (Kudo & Richardson 2018): BPE and unigram, trained or loaded.

Training options, chosen so that `decode(encode(text)) == text` for any text:
- `normalization_rule_name="identity"`: the default NFKC rule rewrites characters (full-width
  CJK punctuation becomes ASCII, ligatures split), which cannot be undone.
- `add_dummy_prefix=False`: otherwise a space is prepended to the text and stripped again
  on decode, which eats a real leading space.
- `remove_extra_whitespaces=False`: otherwise leading, trailing and repeated spaces are
  collapsed. `allow_whitespace_only_pieces=True` then lets runs of spaces (indentation)
  become single pieces.
- `byte_fallback=True` (TokenizerConfig.byte_fallback): a character outside the vocabulary
  becomes its UTF-8 bytes (`<0x0A>` for a newline; SentencePiece trains on lines, so newlines
  are always bytes) instead of <unk>.
The one exception: SentencePiece writes spaces as U+2581 ("▁"), so a literal U+2581 in the
text decodes as a space.

Special token i gets id i: unk/bos/eos/pad are SentencePiece's own control pieces at those
ids, every other special symbol a user-defined piece filling the remaining ids in order.
User-defined pieces are matched inside text; control pieces are not.
"""

from __future__ import annotations

import functools
import io
import pathlib
from collections.abc import Iterable, Iterator, Mapping

import numpy as np
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as model_pb2

from research.config.data import TokenizerConfig, role_of
from research.tokenizers.base import Tokenizer, roles_by_name

MODEL_FILE = "tokenizer.model"
# SentencePiece's piece types (sentencepiece_model.proto).
_UNKNOWN, _CONTROL, _USER_DEFINED = 2, 3, 4
# Fixed, so that training is a function of the corpus and the config alone: the unigram
# trainer's EM sums per-thread statistics, so its scores depend on the thread count.
_TRAIN_SEED = 0
_TRAIN_THREADS = 4


class SentencePieceTokenizer(Tokenizer):
  format = "sentencepiece"

  def __init__(self, model_proto: bytes, roles: Mapping[str, str] | None = None):
    self._proto = bytes(model_proto)
    self._sp = spm.SentencePieceProcessor(model_proto=self._proto)
    model = model_pb2.ModelProto.FromString(self._proto)
    types = np.array([p.type for p in model.pieces], dtype=np.int32)
    self._control = types == _CONTROL
    self._specials = {
        p.piece: i for i, p in enumerate(model.pieces)
        if p.type in (_UNKNOWN, _CONTROL, _USER_DEFINED)
    }
    super().__init__(self._model_roles() if roles is None else roles)

  def _model_roles(self) -> dict[str, str]:
    """Roles the model file itself declares (unk/bos/eos/pad ids), then roles by name."""
    sp = self._sp
    roles = {}
    for role, i in (("unk", sp.unk_id()), ("bos", sp.bos_id()), ("eos", sp.eos_id()),
                    ("pad", sp.pad_id())):
      if i >= 0:
        roles[role] = sp.id_to_piece(i)
    for role, symbol in roles_by_name(self._specials).items():
      roles.setdefault(role, symbol)
    return roles

  @classmethod
  def from_file(cls, path: str | pathlib.Path,
                roles: Mapping[str, str] | None = None) -> "SentencePieceTokenizer":
    return cls(pathlib.Path(path).read_bytes(), roles)

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  @property
  def processor(self) -> spm.SentencePieceProcessor:
    return self._sp

  def encode(self, text: str) -> list[int]:
    return self._sp.encode(text)

  def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
    return self._sp.encode(list(texts))

  def encode_array(self, text: str) -> np.ndarray:
    return np.asarray(self._sp.encode(text), dtype=np.int32)

  def decode(self, ids: Iterable[int]) -> str:
    ids = [int(i) for i in ids]
    # SentencePiece decodes control pieces (bos/eos/pad) to nothing; render them instead,
    # as every other kind does, by decoding the runs between them.
    control = [0 <= i < len(self._control) and self._control[i] for i in ids]
    if not any(control):
      return self._sp.decode(ids)
    parts, run = [], []
    for i, is_control in zip(ids, control):
      if is_control:
        parts.append(self._sp.decode(run) if run else "")
        parts.append(self._sp.id_to_piece(i))
        run = []
      else:
        run.append(i)
    parts.append(self._sp.decode(run) if run else "")
    return "".join(parts)

  def special_tokens(self) -> dict[str, int]:
    return dict(self._specials)

  def _serialized(self) -> bytes:
    return self._proto

  def _save_files(self, directory: pathlib.Path) -> None:
    (directory / MODEL_FILE).write_bytes(self._proto)

  @classmethod
  def _load_files(cls, directory: pathlib.Path,
                  roles: Mapping[str, str]) -> "SentencePieceTokenizer":
    return cls.from_file(directory / MODEL_FILE, roles)


def _lines(texts: Iterable[str]) -> Iterator[str]:
  # SentencePiece trains on sentences without newlines.
  for text in texts:
    yield from (line for line in text.split("\n") if line)


def train(cfg: TokenizerConfig, texts: Iterable[str], *, model_type: str) -> SentencePieceTokenizer:
  """Trains a `model_type` ("bpe" or "unigram") model of `cfg.vocab_size` pieces."""
  specials = cfg.specials()
  meta_ids = {"unk": -1, "bos": -1, "eos": -1, "pad": -1}
  meta_pieces = {}
  user_defined = []
  for i, symbol in enumerate(specials):
    role = role_of(symbol)
    if role in meta_ids:
      meta_ids[role], meta_pieces[role] = i, symbol
    else:
      user_defined.append(symbol)
  model = io.BytesIO()
  spm.set_random_generator_seed(_TRAIN_SEED)
  spm.SentencePieceTrainer.train(
      sentence_iterator=_lines(texts),
      model_writer=model,
      model_type=model_type,
      vocab_size=cfg.vocab_size,
      character_coverage=cfg.character_coverage,
      byte_fallback=cfg.byte_fallback,
      # Lossless round trip: see the module docstring.
      normalization_rule_name="identity",
      add_dummy_prefix=False,
      remove_extra_whitespaces=False,
      allow_whitespace_only_pieces=True,
      unk_id=meta_ids["unk"], bos_id=meta_ids["bos"], eos_id=meta_ids["eos"],
      pad_id=meta_ids["pad"],
      unk_piece=meta_pieces.get("unk", "<unk>"), bos_piece=meta_pieces.get("bos", "<s>"),
      eos_piece=meta_pieces.get("eos", "</s>"), pad_piece=meta_pieces.get("pad", "<pad>"),
      user_defined_symbols=user_defined,
      # Without it a small corpus that cannot fill vocab_size fails instead of stopping.
      hard_vocab_limit=False,
      num_threads=_TRAIN_THREADS,
      minloglevel=2,
  )
  return SentencePieceTokenizer(model.getvalue(), roles_by_name(specials))


train_bpe = functools.partial(train, model_type="bpe")
train_unigram = functools.partial(train, model_type="unigram")
