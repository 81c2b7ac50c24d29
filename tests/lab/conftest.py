from tests.training.conftest import tokenizer_dir  # noqa: F401  (the embedded tokenizer, saved once)
