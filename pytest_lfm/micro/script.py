"""The scripted prompt set: what the micro checkpoints are trained on and what the suites send.

The data lives in ``script.json`` next to this module. A :class:`Turn` is one chat request and the exact answer a
micro checkpoint gives at temperature 0; real models get the same requests and are checked on structure only.
"""

from __future__ import annotations

import base64
import copy
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

    from pytest_lfm.matrix import ModelSpec

KINDS = ("answer", "call", "parallel", "json_call", "forced", "after_result", "no_tool", "call_text", "image",
         "reasoning", "reasoning_call")
TOOL_KINDS = frozenset({"call", "parallel", "json_call", "forced", "after_result", "no_tool", "call_text",
                        "reasoning_call"})
REASONING_KINDS = frozenset({"reasoning", "reasoning_call"})  # a think block, then the answer or the call
THINK_START, THINK_END = "<think>", "</think>"
JSON_CALLS_INSTRUCTION = "Output function calls as JSON."
_COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 60),
    "blue": (30, 70, 220),
    "yellow": (240, 210, 20),
    "black": (0, 0, 0),
    "white": (255, 255, 255),
}


@dataclass(frozen=True)
class ImageSpec:
    """A generated picture: ``count`` shapes of one colour on a plain background, laid out in a row."""

    width: int
    height: int
    shape: str  # "circle" | "square" | "triangle"
    colour: str
    count: int = 1
    background: str = "white"

    def render(self) -> Image.Image:
        from PIL import Image, ImageDraw

        img = Image.new("RGB", (self.width, self.height), _COLOURS[self.background])
        draw = ImageDraw.Draw(img)
        cell = self.width / self.count
        size = min(cell, self.height) * 0.6
        for i in range(self.count):
            cx, cy = cell * (i + 0.5), self.height / 2
            box = (cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2)
            fill = _COLOURS[self.colour]
            if self.shape == "circle":
                draw.ellipse(box, fill=fill)
            elif self.shape == "square":
                draw.rectangle(box, fill=fill)
            else:
                draw.polygon([(cx, box[1]), (box[2], box[3]), (box[0], box[3])], fill=fill)
        return img

    def data_url(self) -> str:
        """The image as a PNG ``data:`` URL, what the suites put in ``image_url.url``."""
        buf = io.BytesIO()
        self.render().save(buf, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@dataclass(frozen=True)
class Turn:
    """One scripted request and its expected answer."""

    id: str
    kind: str
    checkpoints: frozenset[str]
    messages: tuple[dict[str, Any], ...]
    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: str | dict[str, Any] | None = None
    content: str | None = None
    tool_calls: tuple[dict[str, Any], ...] = ()
    images: tuple[ImageSpec, ...] = ()
    max_tokens: int = 64
    parts: tuple[dict[str, Any], ...] = ()  # call_text: the completion in order, {"text": ...} or {"calls": [...]}
    reasoning: str | None = None  # reasoning kinds: the text of the think block before the answer or the call

    @property
    def texts(self) -> list[str]:
        """A call_text turn's text parts, in order (what the content must keep)."""
        return [p["text"] for p in self.parts if "text" in p]

    @property
    def blocks(self) -> list[list[dict[str, Any]]]:
        """A call_text turn's call blocks, in order."""
        return [list(p["calls"]) for p in self.parts if "calls" in p]

    def openai_messages(self) -> list[dict[str, Any]]:
        """The messages with ``{"type": "image", "image": i}`` parts replaced by ``image_url`` data URLs."""
        out = copy.deepcopy(list(self.messages))
        for message in out:
            if isinstance(message.get("content"), list):
                message["content"] = [
                    {"type": "image_url", "image_url": {"url": self.images[part["image"]].data_url()}}
                    if part.get("type") == "image"
                    else part
                    for part in message["content"]
                ]
        return out

    def request(self, model: str, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for ``client.chat.completions.create`` (temperature 0)."""
        kwargs: dict[str, Any] = {
            "model": model,
            "messages": self.openai_messages(),
            "temperature": 0,
            "max_tokens": self.max_tokens,
        }
        if self.tools:
            kwargs["tools"] = copy.deepcopy(list(self.tools))
        if self.tool_choice is not None:
            kwargs["tool_choice"] = copy.deepcopy(self.tool_choice)
        kwargs.update(overrides)
        return kwargs

    @property
    def rendered_tools(self) -> tuple[dict[str, Any], ...]:
        """The tools the chat template sees: none for ``tool_choice="none"``, only the named one for a named choice."""
        if self.tool_choice == "none":
            return ()
        if isinstance(self.tool_choice, dict):
            name = self.tool_choice["function"]["name"]
            return tuple(t for t in self.tools if t["function"]["name"] == name)
        return self.tools


@dataclass(frozen=True)
class Script:
    """All scripted turns, in file order."""

    turns: tuple[Turn, ...]
    tools: dict[str, dict[str, Any]] = field(compare=False)

    def get(self, turn_id: str) -> Turn:
        for turn in self.turns:
            if turn.id == turn_id:
                return turn
        raise KeyError(turn_id)

    def for_checkpoint(self, name: str) -> list[Turn]:
        """The turns micro checkpoint ``name`` (one of ``micro.NAMES``) is trained on."""
        return [t for t in self.turns if name in t.checkpoints]

    def for_model(self, spec: ModelSpec) -> list[Turn]:
        """Micro checkpoints: the turns of their checkpoint; real models: the turns their capabilities allow."""
        if spec.micro:
            return self.for_checkpoint(spec.micro)
        return [t for t in self.turns if _capable(t, spec.capabilities)]

    def of_kind(self, spec: ModelSpec, *kinds: str) -> list[Turn]:
        return [t for t in self.for_model(spec) if t.kind in kinds]


def _capable(turn: Turn, capabilities: Iterable[str]) -> bool:
    caps = set(capabilities)
    if turn.kind in REASONING_KINDS and "reasoning" not in caps:
        return False
    if turn.kind == "image":
        return "vision" in caps
    if turn.kind in TOOL_KINDS or turn.tools:
        return "tools" in caps
    return True


def _turn(raw: dict[str, Any], tools: dict[str, dict[str, Any]], default_checkpoints: list[str]) -> Turn:
    if raw["kind"] not in KINDS:
        raise ValueError(f"script.json: turn {raw['id']!r} has unknown kind {raw['kind']!r}")
    if (raw["kind"] in REASONING_KINDS) != bool(raw.get("reasoning")):
        raise ValueError(f"script.json: turn {raw['id']!r}: a reasoning text belongs to the reasoning kinds "
                         f"({', '.join(sorted(REASONING_KINDS))}) and each of them needs one")
    parts = tuple(raw.get("parts", ()))
    calls = raw.get("tool_calls") or [c for p in parts for c in p.get("calls", ())]
    return Turn(
        id=raw["id"],
        kind=raw["kind"],
        checkpoints=frozenset(raw.get("checkpoints", default_checkpoints)),
        messages=tuple(raw["messages"]),
        tools=tuple(tools[name] for name in raw.get("tools", ())),
        tool_choice=raw.get("tool_choice"),
        content=raw.get("content"),
        tool_calls=tuple(calls),
        images=tuple(ImageSpec(**img) for img in raw.get("images", ())),
        max_tokens=raw.get("max_tokens", 64),
        parts=parts,
        reasoning=raw.get("reasoning"),
    )


def parse_script(data: dict[str, Any]) -> Script:
    """Build a Script from the JSON document (``script.json``'s layout)."""
    tools = {t["function"]["name"]: t for t in data["tools"]}
    defaults = data["default_checkpoints"]
    turns = tuple(_turn(raw, tools, defaults.get(raw["kind"], ["dense", "moe"])) for raw in data["turns"])
    ids = [t.id for t in turns]
    if len(set(ids)) != len(ids):
        raise ValueError("script.json: turn ids are not unique")
    return Script(turns=turns, tools=tools)


def script_text() -> str:
    return (resources.files("pytest_lfm.micro") / "script.json").read_text()


@cache
def load_script() -> Script:
    """The packaged script (cached)."""
    return parse_script(json.loads(script_text()))
