"""Small English + Chinese texts for the tokenizer and data tests (no corpus needed)."""

from __future__ import annotations

import itertools

_ENGLISH = [
    "The quick brown fox jumps over the lazy dog.",
    "A language model assigns probabilities to sequences of tokens.",
    "She sells sea shells by the sea shore, and the shells she sells are surely seashells.",
    "In the beginning the training loss falls quickly, then it settles down slowly.",
    "def train_step(state, batch):\n    return state.apply_gradients(grads=grads)",
    "Numbers like 3.14159, 2718 and 42 appear in text too!",
    "Don't stop; it's only a test -- isn't it?",
]
_CHINESE = [
    "我们今天去公园散步。",
    "天气很好，阳光明媚！",
    "语言模型预测下一个词。",
    "训练数据需要仔细地清洗和去重。",
    "他说：“这是一个测试。”",
]


def corpus(repeats: int = 12) -> str:
  """Deterministic text with varied lines, whitespace runs and both scripts."""
  lines = []
  for i, (en, zh) in enumerate(itertools.product(_ENGLISH, _CHINESE)):
    indent = " " * (i % 4)
    lines.append(f"{indent}{en}  {zh}")
    lines.append(f"{zh}\t{en.lower()}")
  return "\n".join(lines * repeats) + "\n"


# Whitespace edge cases the round trip must keep: leading, repeated and trailing spaces,
# tabs, blank lines, a trailing newline; Chinese; characters absent from the corpus.
ROUND_TRIP = (
    "  leading spaces\n\n\nthree blank lines,    four spaces\tand a tab\n"
    "我们今天去公园散步。  天气很好！\n"
    "   indented 语言模型 mixed\n"
    "unseen: café 🙂 Ω ñ\n"
    "trailing spaces   \n"
)
