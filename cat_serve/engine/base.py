"""What the HTTP layer needs from an engine, beyond the search core's StepGenerator."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from cat_serve.search.generator import StepGenerator


class PromptTooLongError(ValueError):
    """The prompt (or a search prefix) leaves no room to generate within the context window."""


@runtime_checkable
class Engine(StepGenerator, Protocol):
    kind: str  # "vllm" | "transformers"
    supports_structured_output: bool  # GenParams.structured (response_format, forced tool calls)
    model_name: str  # the public name served in /v1/models
    max_model_len: int
    vocab_size: int
    tokenizer: Any  # a Hugging Face tokenizer (chat template, encode, decode)

    def num_inflight(self) -> int:
        """Engine requests (sequences) not yet finished or aborted: the engine's own count."""
        ...

    async def close(self) -> None: ...


def check_room(prefix: Sequence[int], max_tokens: int, max_model_len: int) -> int:
    """Clamp max_tokens to the context left after ``prefix``; raise if there is none."""
    room = max_model_len - len(prefix)
    if room <= 0:
        raise PromptTooLongError(
            f"This model's maximum context length is {max_model_len} tokens, "
            f"but the prompt has {len(prefix)} tokens."
        )
    return min(max_tokens, room)


def find_stop(text: str, stops: Sequence[str]) -> tuple[int, str] | None:
    """Earliest (index, stop string) of any stop string in ``text``."""
    best: tuple[int, str] | None = None
    for s in stops:
        i = text.find(s) if s else -1
        if i >= 0 and (best is None or i < best[0]):
            best = (i, s)
    return best


# apply_chat_template's own parameters: a request's chat_template_kwargs may not change how it is called
_TEMPLATE_CALL_ARGS = frozenset({"conversation", "add_generation_prompt", "continue_final_message", "tokenize",
                                 "chat_template", "return_dict", "return_tensors", "padding", "truncation",
                                 "max_length", "tokenizer_kwargs", "return_assistant_tokens_mask"})


def chat_prompt_ids(tokenizer, messages: Sequence[dict], tools: Sequence[dict] | None = None,
                    template_kwargs: dict | None = None) -> list[int]:
    """Render messages (and the request's tools, as vLLM does) with the tokenizer's own chat template,
    then encode to token ids once.

    ``template_kwargs`` (a request's ``chat_template_kwargs``, e.g. ``enable_thinking``) become template
    variables; keys that are parameters of ``apply_chat_template`` itself are dropped."""
    extra = {k: v for k, v in (template_kwargs or {}).items() if k not in _TEMPLATE_CALL_ARGS}
    if tools:
        extra["tools"] = list(tools)
    text = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False, **extra)
    return list(tokenizer.encode(text, add_special_tokens=False))
