"""Training: pure RL objectives (objectives.py), GSM8K data + CASPO pairing (data.py, pairs.py),
and thin trainers around TRL (sft.py, rl.py, caspo.py) driven by the `cat-train` CLI (cli.py).

Import-light on purpose: importing `training` does not import torch; each module imports what it needs.
"""
