"""``--reasoning-parser NAME``: split a chat completion into reasoning and content with vLLM's own parsers.

Reasoning models think first (``<think>…</think>`` for Qwen3 / DeepSeek-R1) and answer after. ``vllm serve
--reasoning-parser NAME`` returns the thinking as ``message.reasoning`` (streamed as ``delta.reasoning``) and the
rest as ``content``. cat-serve runs the same parser class (``vllm.parser.ParserManager.get_parser``, one
instance per choice because parsers are stateful, built with the request's ``chat_template_kwargs`` so e.g.
Qwen3's ``enable_thinking=False`` is honoured) on the text its engine or its search produced, so the split is
byte for byte vLLM's. vLLM 0.32 names the field ``reasoning``; ``reasoning_content`` (its name before the
rename, and DeepSeek's API's) is sent too, with the same value (``REASONING_FIELDS``).

Streaming feeds the parser each engine delta (text and token ids, as ``vllm serve`` does) and forwards its
reasoning deltas at once; content deltas are held back as far as a stop string could still cut them, and the
final split of the finished text settles the tail (the engine trims a matched stop string only at the end).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

REASONING_FIELDS = ("reasoning", "reasoning_content")  # vLLM 0.32's name, and the older / DeepSeek one


def reasoning_fields(reasoning: str | None) -> dict:
    return {name: reasoning for name in REASONING_FIELDS}


class ReasoningParser:
    """The server's ``--reasoning-parser``: vLLM's parser class for ``name``, checked against the tokenizer."""

    def __init__(self, name: str, tokenizer):
        try:
            from vllm.parser.parser_manager import ParserManager
            from vllm.reasoning import ReasoningParserManager
        except ImportError as e:  # the transformers engine on a machine without vLLM
            raise ValueError("--reasoning-parser needs vLLM installed (its parsers do the split)") from e
        known = ReasoningParserManager.list_registered()
        if name not in known:
            raise ValueError(f"unknown --reasoning-parser {name!r}; vLLM ships: {', '.join(known)}")
        self.name, self.tokenizer = name, tokenizer
        # raises when the tokenizer lacks the parser's markers (e.g. no <think> token)
        self.parser_cls = ParserManager.get_parser(reasoning_parser_name=name, tokenizer=tokenizer)

    def for_request(self, prompt: Sequence[int], template_kwargs: dict[str, Any] | None = None,
                    include_reasoning: bool = True) -> RequestReasoning:
        return RequestReasoning(self, list(prompt), dict(template_kwargs or {}), include_reasoning)


class RequestReasoning:
    """One request's view of the parser: the request settings it is built with and the rendered prompt."""

    def __init__(self, parser: ReasoningParser, prompt: list[int], template_kwargs: dict, include_reasoning: bool):
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

        self.parser, self.prompt, self.template_kwargs = parser, prompt, template_kwargs
        self.include_reasoning = include_reasoning
        # the parsers read include_reasoning, tools and tool_choice from vLLM's own request type
        self._request = ChatCompletionRequest(messages=[{"role": "user", "content": ""}], model=None,
                                              chat_template_kwargs=template_kwargs,
                                              include_reasoning=include_reasoning)

    def _new(self):
        return self.parser.parser_cls(self.parser.tokenizer, None, chat_template_kwargs=self.template_kwargs)

    def split(self, text: str, token_ids: Sequence[int] = ()) -> tuple[str | None, str | None]:
        """(reasoning, content) of a finished completion, as ``vllm serve`` returns them (either may be None)."""
        parser = self._new()
        parser.set_prompt_token_ids(self.prompt)
        reasoning, content, _ = parser.parse(text, self._request, model_output_token_ids=list(token_ids))
        return (reasoning if self.include_reasoning else None), content

    def count(self, token_ids: Sequence[int]) -> int:
        """Reasoning tokens among ``token_ids`` (usage.completion_tokens_details.reasoning_tokens)."""
        return int(self._new().count_reasoning_tokens(list(token_ids)))

    def stream(self, holdback: int = 0) -> ReasoningStream:
        return ReasoningStream(self, holdback)


class ReasoningStream:
    """One streamed choice: engine deltas in, (reasoning delta, content delta) out."""

    def __init__(self, req: RequestReasoning, holdback: int):
        self.req, self.holdback = req, holdback
        self.parser = req._new()
        self.fed_chars = self.fed_tokens = 0
        self.reasoning_sent = ""
        self.content_seen = self.content_sent = ""

    def feed(self, text: str, token_ids: Sequence[int]) -> tuple[str, str]:
        """The partial completion so far (its whole text and ids); returns what may be sent now."""
        delta_text, delta_ids = text[self.fed_chars:], list(token_ids[self.fed_tokens:])
        if not delta_ids and not delta_text:
            return "", ""
        self.fed_chars, self.fed_tokens = max(self.fed_chars, len(text)), len(token_ids)
        msg = self.parser.parse_delta(delta_text, delta_ids, self.req._request, self.req.prompt, finished=False)
        reasoning = (msg.reasoning or "") if msg is not None and self.req.include_reasoning else ""
        self.reasoning_sent += reasoning
        self.content_seen += (msg.content or "") if msg is not None else ""
        safe = self.content_seen[:len(self.content_seen) - self.holdback] if self.holdback else self.content_seen
        safe = safe.rstrip("\ufffd")
        content = safe[len(self.content_sent):] if safe.startswith(self.content_sent) else ""
        self.content_sent += content
        return reasoning, content

    def finish(self, text: str, token_ids: Sequence[int]) -> tuple[str, str]:
        """The rest, from the split of the finished completion (what the non-streaming response holds)."""
        reasoning, content = self.req.split(text, token_ids)
        reasoning, content = reasoning or "", content or ""
        rest_r = reasoning[len(self.reasoning_sent):] if reasoning.startswith(self.reasoning_sent) else ""
        rest_c = content[len(self.content_sent):] if content.startswith(self.content_sent) else ""
        self.reasoning_sent += rest_r
        self.content_sent += rest_c
        return rest_r, rest_c
