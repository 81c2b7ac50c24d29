"""Pure search core: stdlib + numpy (+ math-verify for answer equivalence).

Nothing here imports torch, vllm or fastapi; strategies receive a StepGenerator.
"""
