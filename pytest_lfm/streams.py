"""A chat-completion stream assembled per choice the way OpenAI clients assemble it: content, reasoning, tool calls by
``index``, finish reasons and usage chunks, with the raw chunks kept for failure messages."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from openai.types import CompletionUsage
from openai.types.chat import ChatCompletionChunk


@dataclass
class StreamedCall:
    """One tool call assembled from stream deltas the way OpenAI clients do: by ``index``, names and argument
    fragments concatenated."""

    index: int
    ids: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    arguments: str = ""

    def add(self, *, name: str | None = None, arguments: str | None = None, id: str | None = None) -> None:
        if id:
            self.ids.append(id)
        if name:
            self.names.append(name)
        if arguments:
            self.arguments += arguments

    @property
    def name(self) -> str:
        return "".join(self.names)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": self.arguments}


@dataclass
class StreamedChoice:
    """Everything one choice received over a stream."""

    index: int
    roles: list[str] = field(default_factory=list)
    first_delta: dict[str, Any] | None = None
    content: str = ""
    reasoning: str = ""  # delta.reasoning_content, which sglang's --reasoning-parser fills
    parts: list[str] = field(default_factory=list)  # what each delta carried, in order: reasoning, content, calls
    calls: dict[int, StreamedCall] = field(default_factory=dict)
    finish_reasons: list[str] = field(default_factory=list)

    @property
    def finish_reason(self) -> str | None:
        return self.finish_reasons[-1] if self.finish_reasons else None

    def call_dicts(self) -> list[dict[str, Any]]:
        return [self.calls[i].as_dict() for i in sorted(self.calls)]


@dataclass
class Stream:
    """A consumed chat-completion stream: choices by index, usage chunks, and the raw chunks for messages."""

    choices: dict[int, StreamedChoice] = field(default_factory=dict)
    usage_chunks: list[CompletionUsage] = field(default_factory=list)
    chunks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def usage(self) -> CompletionUsage | None:
        return self.usage_chunks[-1] if self.usage_chunks else None

    def only_choice(self) -> StreamedChoice:
        assert len(self.choices) == 1, f"expected one streamed choice, got {sorted(self.choices)}: {self.chunks}"
        return next(iter(self.choices.values()))


def assemble_stream(chunks: Iterable[ChatCompletionChunk]) -> Stream:
    """Consume a stream and assemble it per choice, keeping what the checks need (roles, finish chunks, usage)."""
    stream = Stream()
    for chunk in chunks:
        stream.chunks.append(chunk.model_dump(exclude_none=True))
        if chunk.usage is not None:
            stream.usage_chunks.append(chunk.usage)
        for part in chunk.choices:
            choice = stream.choices.setdefault(part.index, StreamedChoice(part.index))
            delta = part.delta
            if choice.first_delta is None:
                choice.first_delta = delta.model_dump(exclude_none=True)
            if delta.role:
                choice.roles.append(delta.role)
            choice.content += delta.content or ""
            reasoning = reasoning_of(delta)
            choice.reasoning += reasoning or ""
            choice.parts += [name for name, value in (("reasoning", reasoning), ("content", delta.content),
                                                      ("calls", delta.tool_calls)) if value]
            for call in delta.tool_calls or ():
                function = call.function
                choice.calls.setdefault(call.index, StreamedCall(call.index)).add(
                    id=call.id, name=function.name if function else None,
                    arguments=function.arguments if function else None)
            if part.finish_reason is not None:
                choice.finish_reasons.append(part.finish_reason)
    return stream


def reasoning_of(message: Any) -> str | None:
    """A message's or a delta's ``reasoning_content``: a field sglang adds, which the openai client keeps as extra."""
    value = (getattr(message, "model_extra", None) or {}).get("reasoning_content")
    return value if isinstance(value, str) else None
