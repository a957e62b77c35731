"""Prompt/response pairs for supervised fine-tuning: JSONL files, and the template that joins a
pair into one document.

A JSONL file holds one JSON object per line with a prompt and a response field (names from
DataConfig.prompt_field / response_field); blank lines are skipped, and a malformed record is
an error naming the file, the line and what is wrong with it.

A template (DataConfig.template) is text with {prompt} and {response} in that order, the
role placeholders {sep}, {bos}, {eos}, and literally written special-token symbols of the
tokenizer (chat markers such as `<|user|>`). A pair becomes

    [bos] + tokens(template up to {response}) + tokens({response} and what follows) + [eos]

and the answer (the tokens that carry loss when loss_on="answer") is the second part and the
EOS: from the first token after the separator through the end of the document.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
from collections.abc import Mapping, Sequence

import numpy as np

from research.config.data import DataConfig
from research.tokenizers import Tokenizer

_PLACEHOLDER = re.compile(r"\{(prompt|response|sep|bos|eos)\}")


def default_template(cfg: DataConfig) -> str:
  if cfg.template is not None:
    return cfg.template
  # The synthetic prompts end in their own separator ("=", "?k="); a file's prompts may not.
  return "{prompt}{sep}{response}" if cfg.is_jsonl else "{prompt}{response}"


def read_jsonl(path: str | pathlib.Path, prompt_field: str = "prompt",
               response_field: str = "response") -> list[tuple[str, str]]:
  """(prompt, response) of every record of a JSONL file, in file order."""
  path = pathlib.Path(path)
  out = []
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      where = f"{path}, line {number}"
      try:
        record = json.loads(line)
      except json.JSONDecodeError as err:
        raise ValueError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
      if not isinstance(record, Mapping):
        raise ValueError(f"{where}: expected a JSON object with {prompt_field!r} and "
                         f"{response_field!r}, got a {type(record).__name__}")
      values = []
      for field in (prompt_field, response_field):
        if field not in record:
          raise ValueError(f"{where}: no {field!r} field (the record has: "
                           f"{', '.join(map(repr, record)) or 'no fields'})")
        if not isinstance(record[field], str):
          raise ValueError(f"{where}: field {field!r} must be a string, got "
                           f"{type(record[field]).__name__}")
        values.append(record[field])
      if not values[1]:
        raise ValueError(f"{where}: field {response_field!r} is empty; a response carries the loss")
      out.append((values[0], values[1]))
  if not out:
    raise ValueError(f"{path} holds no records")
  return out


def training_text(template: str, prompt: str, response: str, special_symbols: Sequence[str]) -> str:
  """The text a trained tokenizer should learn from: the rendered pair without special tokens."""
  text = template.replace("{prompt}", "\0p").replace("{response}", "\0r")
  for name in ("sep", "bos", "eos"):
    text = text.replace("{" + name + "}", "")
  for symbol in special_symbols:
    text = text.replace(symbol, "")
  return text.replace("\0p", prompt).replace("\0r", response)


@dataclasses.dataclass(frozen=True)
class Template:
  """A template bound to a tokenizer: its constant pieces are tokenized once."""

  source: str
  before_prompt: tuple[int, ...]
  between: tuple[int, ...]  # after {prompt}, before {response}: the separator
  after_response: tuple[int, ...]

  @classmethod
  def build(cls, template: str, tokenizer: Tokenizer) -> "Template":
    head, rest = template.split("{prompt}")
    between, tail = rest.split("{response}")
    return cls(template, *(tuple(_encode_literal(part, tokenizer, template))
                           for part in (head, between, tail)))

  def encode(self, prompt_ids: Sequence[int], response_ids: Sequence[int], bos: Sequence[int],
             eos: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, answer) of one document; answer marks the response, what follows it, and EOS."""
    question = [*bos, *self.before_prompt, *prompt_ids, *self.between]
    answer = [*response_ids, *self.after_response, eos]
    ids = np.asarray(question + answer, np.int32)
    return ids, np.repeat([False, True], [len(question), len(answer)])


def _encode_literal(text: str, tokenizer: Tokenizer, template: str) -> list[int]:
  """Tokens of template text: role placeholders and special-token symbols become their ids,
  the rest is encoded as text."""
  specials = tokenizer.special_tokens()
  roles = {"sep": tokenizer.sep_id, "bos": tokenizer.bos_id, "eos": tokenizer.eos_id}
  symbols = sorted(specials, key=len, reverse=True)
  pattern = "|".join([_PLACEHOLDER.pattern] + [re.escape(s) for s in symbols])
  ids: list[int] = []
  position = 0
  for match in re.finditer(pattern, text):
    ids += tokenizer.encode(text[position:match.start()]) if match.start() > position else []
    token = match.group(0)
    if token in specials:
      ids.append(specials[token])
    else:
      role = token[1:-1]
      if roles[role] is None:
        raise ValueError(
            f"DataConfig.template={template!r} uses {token}, but the tokenizer has no {role} "
            f"token (special tokens: {sorted(specials)}); add one to "
            f"data.tokenizer.special_tokens (e.g. '<{role}>') or write the template without it")
      ids.append(roles[role])
    position = match.end()
  if position < len(text):
    ids += tokenizer.encode(text[position:])
  return ids
