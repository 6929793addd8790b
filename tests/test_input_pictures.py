"""An image given with a task reaches a model that sees as a picture, in the first request, on
both providers' wire formats (local servers that speak them); a model that cannot see is told
what it is in words only; one too large for a task's log is made smaller first; the image is
kept as the task's artifact."""

from __future__ import annotations

import base64
import io
import json
import random
from pathlib import Path
from typing import Any

import PIL.Image
import pytest

from agent.events import Limits
from agent.runner import Runner
from agent.store import Store
from base.errors import ConfigError
from base.images import MAX_BYTES
from frontends.inputs import attachments
from policies import Gate
from tools import Registry

from .test_http_conformance import NO_WAIT, AnthropicWire, OpenAIWire, Wire
from .wire_server import WireServer


def _png(path: Path, size: tuple[int, int], *, noisy: bool = False) -> tuple[Path, bytes]:
    """A PNG at `path` (random pixels if `noisy`: one that does not compress); its bytes."""
    if noisy:
        pixels = random.Random(3).randbytes(size[0] * size[1] * 3)
        picture = PIL.Image.frombytes("RGB", size, pixels)
    else:
        picture = PIL.Image.new("RGB", size, (200, 30, 30))
    picture.save(path, "PNG")
    return path, path.read_bytes()


def _pictures(body: dict[str, Any]) -> list[str]:
    """The data URLs of the pictures in a request body's first user message, as either wire
    carries them (an image_url part; an image block)."""
    first = next(m for m in body["messages"] if m["role"] == "user")
    parts = first["content"] if isinstance(first["content"], list) else []
    urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    urls += [
        f"data:{p['source']['media_type']};base64,{p['source']['data']}"
        for p in parts
        if p["type"] == "image"
    ]
    return urls


async def _first_request(
    store: Store, wire: Wire, shot: tuple[Path, bytes], *, vision: bool
) -> dict[str, Any]:
    with WireServer() as server:
        server.reply(wire.tool_call("call_1", "finish", json.dumps({"answer": "a red square"})))
        model = wire.backend(server.url, retry=NO_WAIT)
        model.vision = vision
        runner = Runner(store, Registry(), Gate.default(), planner=model)
        files = attachments([str(shot[0])])
        task_id = runner.create("What is in the picture?", Limits(), files=files, plan=False)
        try:
            assert (await runner.run(task_id)).status == "done"
        finally:
            await model.aclose()
        assert runner.artifacts(task_id).read(shot[0].name) == shot[1]
        body: dict[str, Any] = server.requests[0].json
        return body


@pytest.mark.parametrize("wire", [OpenAIWire(), AnthropicWire()], ids=["openai", "anthropic"])
async def test_an_image_given_with_the_task_reaches_a_model_that_sees(
    store: Store, tmp_path: Path, wire: Wire
) -> None:
    shot = _png(tmp_path / "error.png", (320, 200))
    body = await _first_request(store, wire, shot, vision=True)
    [url] = _pictures(body)
    head, _, data = url.partition(",")
    assert head == "data:image/png;base64"
    assert base64.b64decode(data) == shot[1]
    assert "a picture, 320x200 pixels" in json.dumps(body)


async def test_a_model_that_cannot_see_is_told_what_the_image_is(
    store: Store, tmp_path: Path
) -> None:
    shot = _png(tmp_path / "error.png", (320, 200))
    body = await _first_request(store, OpenAIWire(), shot, vision=False)
    assert _pictures(body) == []
    assert '<file name=\\"error.png\\" kind=\\"image\\">' in json.dumps(body)


def test_an_image_too_large_is_made_smaller_and_a_broken_one_refused(tmp_path: Path) -> None:
    big, data = _png(tmp_path / "big.png", (1400, 1000), noisy=True)
    assert len(data) > MAX_BYTES
    [given] = attachments([str(big)])
    [image] = given.images
    assert image.media_type == "image/jpeg"
    data = base64.b64decode(image.data)
    assert len(data) <= MAX_BYTES
    with PIL.Image.open(io.BytesIO(data)) as smaller:
        assert max(smaller.size) <= 1600
    assert "a picture, 1400x1000 pixels" in given.content
    assert "made smaller" in given.content
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(
        ConfigError, match=r"broken\.png: not a PNG, JPEG or WebP picture"
    ) as caught:
        attachments([str(tmp_path / "broken.png")])
    assert "BytesIO" not in str(caught.value)  # said in words, not as Python's objects


def test_more_pictures_than_a_log_keeps_are_refused(tmp_path: Path) -> None:
    shots = [_png(tmp_path / f"noise-{n}.png", (400, 300), noisy=True)[0] for n in range(4)]
    with pytest.raises(ConfigError, match="more than the 1,200,000 a task keeps in its log"):
        attachments([str(s) for s in shots])
