"""Token-choice routing for mixture-of-experts layers: pure functions on router outputs.

Every token picks its top-k experts from router logits; with a capacity, each expert takes
at most C assignments per group of tokens (one group = one sequence here) and the rest are
dropped, as in GShard (Lepikhin et al. 2020) and Switch (Fedus et al. 2021). The auxiliary
losses that keep routing balanced and the router logits small live here too.

Letters: B batch (one routing group per sequence), T tokens per group, E experts,
K choices per token (top-k), C expert capacity (slots per expert and group).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def _top_k(x_BTE: jax.Array, k: int):
  """`jax.lax.top_k` over the last axis (ties to the lower index) as k rounds of argmax.

  XLA's SPMD partitioner gathers a batch-sharded operand before a TopK; argmax is a reduction
  it keeps local, and k (the experts per token) is small.
  """
  values, indices = [], []
  remaining = x_BTE
  for _ in range(k):
    index_BT = jnp.argmax(remaining, axis=-1)
    values.append(jnp.take_along_axis(x_BTE, index_BT[..., None], axis=-1)[..., 0])
    indices.append(index_BT)
    taken = jax.nn.one_hot(index_BT, x_BTE.shape[-1], dtype=bool)
    remaining = jnp.where(taken, -jnp.inf, remaining)
  return jnp.stack(values, axis=-1), jnp.stack(indices, axis=-1)


def top_k_gates(logits_BTE: jax.Array, k: int, softmax_after_topk: bool):
  """The k chosen experts of every token (int32[B, T, K]) and their gates (float32[B, T, K]).

  softmax_after_topk=False: gates are the full softmax's probabilities of the chosen experts
  (Switch: p_i(x) of eq. 1 scales the expert output). True: softmax over the k chosen logits,
  G(x) = Softmax(TopK(x W_g)) (Mixtral, Jiang et al. 2024), which equals renormalising the
  chosen probabilities to sum to one (GShard's top-2 gate normalisation).
  The selection is the same either way, since softmax is monotone.
  """
  logits_BTE = logits_BTE.astype(jnp.float32)
  top_logits_BTK, expert_BTK = _top_k(logits_BTE, k)
  if softmax_after_topk:
    gate_BTK = jax.nn.softmax(top_logits_BTK, axis=-1)
  else:
    probs_BTE = jax.nn.softmax(logits_BTE, axis=-1)
    gate_BTK = jnp.take_along_axis(probs_BTE, expert_BTK, axis=-1)
  return expert_BTK.astype(jnp.int32), gate_BTK


def expert_capacity(tokens: int, experts: int, top_k: int, factor: float) -> int:
  """Slots per expert for a group of `tokens`: ceil(factor * top_k * tokens / experts).

  Switch (Fedus et al. 2021, eq. 3) with GShard's k assignments per token. At least one slot,
  and at most `tokens`: the k choices of a token are distinct experts, so no expert can be
  sent more than `tokens` assignments and a larger capacity would only add empty slots.
  """
  return max(1, min(tokens, math.ceil(factor * top_k * tokens / experts)))


def group_capacity(valid_BT: jax.Array, experts: int, top_k: int, factor: float) -> jax.Array:
  """int32[B]: `expert_capacity` of each sequence's real (non-padding) tokens.

  The slot buffer is sized for the padded length (a static shape); limiting each sequence to
  the capacity of its real tokens makes padding change nothing, not even how many slots the
  real tokens get.
  """
  n_BT = jnp.sum(valid_BT.astype(jnp.int32), axis=1)
  cap = jnp.ceil(factor * top_k * n_BT / experts).astype(jnp.int32)
  return jnp.clip(cap, 1, expert_capacity(valid_BT.shape[1], experts, top_k, factor))


def assign_slots(expert_BTK: jax.Array, valid_BT: jax.Array, n_experts: int,
                 capacity: int | jax.Array, priority: str = "token"):
  """Each assignment's slot in its expert (int32[B, T, K]) and whether it fits (bool[B, T, K]).

  An expert's slots are filled in priority order by a running count (cumsum) of the
  assignments sent to it, GShard's position-in-expert (Lepikhin et al. 2020, Algorithm 1);
  assignments whose slot is >= capacity (an int, or int32[B] per sequence) are dropped.
  Padding tokens (valid 0) claim no slot.

  priority 'token': token by token, each token's choices in rank order. A token's slot
    depends only on the tokens before it, so dropping keeps a causal model causal.
  priority 'choice': every token's first choice before any second choice (GShard's top-2
    and the Mesh-TF/flaxformer routers): second choices are dropped first, but a token's
    slot then depends on the first choices of later tokens.
  """
  b, t, k = expert_BTK.shape
  sent_BTKE = jax.nn.one_hot(expert_BTK, n_experts, dtype=jnp.int32)
  sent_BTKE = sent_BTKE * valid_BT.astype(jnp.int32)[:, :, None, None]
  if priority == "token":
    count_BTKE = jnp.cumsum(sent_BTKE.reshape(b, t * k, n_experts), axis=1).reshape(sent_BTKE.shape)
  elif priority == "choice":
    by_choice = sent_BTKE.transpose(0, 2, 1, 3).reshape(b, k * t, n_experts)
    count_BTKE = jnp.cumsum(by_choice, axis=1).reshape(b, k, t, n_experts).transpose(0, 2, 1, 3)
  else:
    raise ValueError(f"priority={priority!r} is not one of: 'token', 'choice'")
  slot_BTK = jnp.sum((count_BTKE - 1) * sent_BTKE, axis=-1)
  routed_BTK = jnp.sum(sent_BTKE, axis=-1) > 0
  capacity_B11 = jnp.reshape(jnp.asarray(capacity, jnp.int32), (-1, 1, 1))
  return slot_BTK, routed_BTK & (slot_BTK < capacity_B11)


def dispatch_and_combine(expert_BTK, gate_BTK, slot_BTK, kept_BTK, n_experts: int, capacity: int):
  """GShard's dispatch mask and combine weights, both float32[B, T, E, C].

  dispatch[b, t, e, c] = 1 when token t of group b fills slot c of expert e; combine holds
  its gate there instead, so the layer output is sum_{e,c} combine * expert_e(slot c).
  """
  slot_BTKC = jax.nn.one_hot(slot_BTK, capacity, dtype=jnp.float32) * kept_BTK[..., None]
  expert_BTKE = jax.nn.one_hot(expert_BTK, n_experts, dtype=jnp.float32)
  dispatch_BTEC = jnp.einsum("BTKE,BTKC->BTEC", expert_BTKE, slot_BTKC)
  combine_BTEC = jnp.einsum("BTKE,BTKC->BTEC", expert_BTKE * gate_BTK[..., None], slot_BTKC)
  return dispatch_BTEC, combine_BTEC


def _mean_over_valid(x_BT: jax.Array, valid_BT: jax.Array) -> jax.Array:
  w = valid_BT.astype(jnp.float32)
  return jnp.sum(x_BT * w) / jnp.maximum(jnp.sum(w), 1.0)


def expert_load(expert_BTK: jax.Array, valid_BT: jax.Array, n_experts: int) -> jax.Array:
  """float32[E]: the fraction of the k * tokens assignments routed to each expert (sums to 1).

  Counted before capacity drops, as Switch's f_i.
  """
  sent_BTE = jnp.sum(jax.nn.one_hot(expert_BTK, n_experts, dtype=jnp.float32), axis=2)
  w = valid_BT.astype(jnp.float32)[..., None]
  k = expert_BTK.shape[-1]
  return jnp.sum(sent_BTE * w, axis=(0, 1)) / (k * jnp.maximum(jnp.sum(w), 1.0))


def load_balance_loss(logits_BTE: jax.Array, expert_BTK: jax.Array, valid_BT: jax.Array):
  """Switch's auxiliary loss (Fedus et al. 2021, eq. 4): N * sum_i f_i * P_i.

  f_i: fraction of assignments sent to expert i (`expert_load`; top-k counts all k choices
  and divides by k, so sum_i f_i = 1); P_i: mean router probability of expert i over the
  tokens. Only P carries gradient. Uniform routing (f_i = P_i = 1/N) gives exactly 1; one
  expert taking every token with probability 1 gives N. Transformers' Mixtral loss divides
  f by the token count only, so it is k times this one.
  Returns (loss, f).
  """
  n_experts = logits_BTE.shape[-1]
  probs_BTE = jax.nn.softmax(logits_BTE.astype(jnp.float32), axis=-1)
  w = valid_BT.astype(jnp.float32)[..., None]
  p_E = jnp.sum(probs_BTE * w, axis=(0, 1)) / jnp.maximum(jnp.sum(w), 1.0)
  f_E = expert_load(expert_BTK, valid_BT, n_experts)
  return n_experts * jnp.sum(f_E * p_E), f_E


def router_z_loss(logits_BTE: jax.Array, valid_BT: jax.Array) -> jax.Array:
  """ST-MoE's router z-loss (Zoph et al. 2022, eq. 5): mean over tokens of logsumexp(x)^2.

  Penalises large router logits, which round badly in low precision and destabilise training.
  """
  lse_BT = jax.nn.logsumexp(logits_BTE.astype(jnp.float32), axis=-1)
  return _mean_over_valid(jnp.square(lse_BT), valid_BT)
