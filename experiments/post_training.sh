#!/usr/bin/env bash
# Post-training measurements of the README ("Post-training"), on the synthetic question/answer
# mixture (copy, associative recall, modular arithmetic), a few CPU minutes per run:
#   1. pretrain a small LM briefly; SFT it (and, as a control, train it further as an LM);
#   2. full fine-tuning against each PEFT method, from the same base, in the same steps;
#   3. a small student trained on 900 pairs with and without a teacher, three seeds each.
# Every number is greedy exact match on the 600 validation pairs (research.train.evaluate).
#
#   bash experiments/post_training.sh [OUT]       # OUT defaults to runs/post
set -euo pipefail
OUT=${1:-runs/post}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"

QUIET="train.progress=false mesh.data=1 train.sample_tokens=0 train.tensorboard=false
       train.checkpoint_every=0 train.eval_every=0 train.log_every=500"
TASK="data.dataset=synthetic_mix data.synthetic.min_len=2 data.synthetic.max_len=5
      data.synthetic.modulus=10 data.synthetic.alphabet=10 data.synthetic.num_examples=6000"
# Fine-tuning: one pair per row, loss on the response and its EOS.
SFT="train.objective=sft data.loss_on=answer data.pack=false data.seq_len=32 data.batch_size=32
     optimizer.warmup_steps=30"

train() {  # train NAME CONFIG [key=value ...]
  local name=$1 config=$2
  shift 2
  # shellcheck disable=SC2086
  $PY -m research.train --config "$config" --workdir "$OUT/$name" $QUIET "$@" | tail -n 1
  $PY -m research.train.evaluate --workdir "$OUT/$name" 2>/dev/null | tee -a "$RESULTS"
}

# 1. A 2-layer, 64-wide LM (the smoke config, 102k parameters), 400 steps of packed LM training.
# shellcheck disable=SC2086
train pre smoke $TASK data.batch_size=16 data.seq_len=48 train.steps=400 optimizer.lr=3e-3 \
  optimizer.warmup_steps=40
BASE="$OUT/pre/config.json"
FROM="train.init_from=$OUT/pre train.steps=600"
# shellcheck disable=SC2086
train sft "$BASE" $SFT $FROM optimizer.lr=1e-3
# shellcheck disable=SC2086
train lm "$BASE" $SFT $FROM optimizer.lr=1e-3 train.objective=causal_lm data.loss_on=all

# 2. PEFT methods, 600 steps from the same base; learning rates from a sweep over
#    {3e-3, 1e-2, 3e-2} (prompt tuning: {1e-2, 1e-1, 3e-1}) on these validation pairs.
PEFT="$SFT $FROM optimizer.weight_decay=0"
# shellcheck disable=SC2086
{
  train lora "$BASE" $PEFT optimizer.lr=1e-2 peft.method=lora peft.rank=8 peft.targets=attention,ffn
  train prefix "$BASE" $PEFT optimizer.lr=1e-2 peft.method=prefix peft.num_tokens=20
  train prompt "$BASE" $PEFT optimizer.lr=3e-1 peft.method=prompt peft.num_tokens=10
  train adapter "$BASE" $PEFT optimizer.lr=3e-2 peft.method=adapter peft.bottleneck=16
  train llama_adapter "$BASE" $PEFT optimizer.lr=1e-2 peft.method=llama_adapter \
    peft.adapter_layers=2 peft.num_tokens=20
}

# 3. Distillation. Teacher: the base SFT'd for 3000 steps. Student: 32 wide (30k parameters),
#    900 training pairs, 2000 steps, from scratch, with (alpha 0.9, T 2) and without the teacher.
# shellcheck disable=SC2086
train teacher "$BASE" $SFT train.init_from="$OUT/pre" train.steps=3000 optimizer.lr=1e-3
STUDENT="model.d_model=32 model.n_heads=4 data.synthetic.num_examples=1500 data.val_fraction=0.4
         train.steps=2000 optimizer.lr=3e-3"
for seed in 0 1 2; do
  # shellcheck disable=SC2086
  train "student_$seed" "$BASE" $SFT $STUDENT train.seed=$seed
  # shellcheck disable=SC2086
  train "distilled_$seed" "$BASE" $SFT $STUDENT train.seed=$seed distill.teacher="$OUT/teacher" \
    distill.alpha=0.9 distill.temperature=2
done

$PY - "$RESULTS" <<'EOF'
import json, pathlib, sys
rows = [json.loads(line) for line in pathlib.Path(sys.argv[1]).read_text().splitlines()]
em = {pathlib.Path(r["workdir"]).name: r["exact_match"] for r in rows}
full = em["sft"]
print(f"{'run':16} exact match   of full FT")
for name, value in em.items():
  print(f"{name:16} {value:8.1%}   {value / full:8.0%}")
EOF
