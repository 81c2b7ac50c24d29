"""How a prompt asks for the final answer. Training and evaluation ask differently, on purpose.

Both answer formats are read by the one grader (``cat_serve.search.answers``: the last ``\\boxed{}``,
else the last ``#### x`` line), so a model trained with one is graded correctly under the other.

* ``TRAIN_SUFFIX``: the GSM8K reference solutions are one step per line ending in ``#### x``. SFT
  targets, RL rewards and CaSPO's per-step preference pairs are built from those references, so the
  training prompt asks for exactly that layout: what the model learns to write is what the step
  splitter and the reward read.
* ``EVAL_SUFFIX``: the usual instruction of math benchmarks (``\\boxed{}``), so that cat-eval's numbers
  compare with published ones, and so that MATH-500 / AIME answers (fractions, expressions) are
  delimited unambiguously.
"""

TRAIN_SUFFIX = "\nSolve step by step, one step per line, and end with '#### <answer>'."
EVAL_SUFFIX = "\n\nPlease reason step by step, and put your final answer within \\boxed{}."
