"""A local model that sees: the bundled SmolLM2 with a projector (`mmproj`) written for the module
(`tests/tiny_projector.py`), in a real model worker, with no mocks.

The projector's weights are noise, so what the model says of a picture means nothing; what these
tests pin down is that the picture reaches the model: its image tokens are in the prompt the
model read, the KV cache keeps them for the next call with the same picture (and not for another
picture), a bad projector fails to load naming it, and a picture that cannot be read is a note
in its place that leaves the worker whole.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image as Pillow

from agent.backends._chat import IMAGE_MARK, chat_messages
from agent.backends.base import Message, ModelRequest, ToolCall
from agent.backends.local import LocalBackend, bundled_model, local_backend
from agent.config import load_config
from base.errors import BackendError, ConfigError
from base.images import Image
from frontends.task_setup import backend_for
from tests.tiny_projector import IMAGE_TOKENS, write_tiny_projector

#: SmolLM2-135M's width: the projector's output must be this wide
SMOLLM_WIDTH = 576


def picture(colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> Image:
    out = io.BytesIO()
    Pillow.new("RGB", size, colour).save(out, format="PNG")
    return Image.of(out.getvalue(), "image/png")


def asking(images: tuple[Image, ...] = (), turn: int = 0) -> ModelRequest:
    return ModelRequest(
        task_id="t",
        purpose="act",
        turn=turn,
        tools=(),
        messages=(
            Message(role="system", content="You describe pictures."),
            Message(role="user", content="What is in this picture?", images=images),
        ),
    )


@pytest.fixture(scope="module")
def projector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mmproj")
    return write_tiny_projector(folder / "mmproj-tiny.gguf", SMOLLM_WIDTH)


@pytest.fixture(scope="module")
def seeing(projector: Path) -> Iterator[LocalBackend]:
    backend = LocalBackend(bundled_model(), mmproj=projector, max_tokens=8, slots=1)
    yield backend
    asyncio.run(backend.aclose())


async def test_a_picture_reaches_the_model_as_its_image_tokens(seeing: LocalBackend) -> None:
    info = await seeing.load()
    assert info.vision
    assert seeing.vision
    assert "sees pictures" in info.summary()

    without = await seeing.complete(asking())
    with_one = await seeing.complete(asking((picture((200, 30, 30)),)))
    with_two = await seeing.complete(asking((picture((200, 30, 30)), picture((30, 30, 200)))))

    assert with_one.usage.input_tokens == without.usage.input_tokens + IMAGE_TOKENS
    assert with_two.usage.input_tokens == without.usage.input_tokens + 2 * IMAGE_TOKENS


async def test_the_same_picture_is_kept_in_the_cache_and_another_is_not(
    seeing: LocalBackend,
) -> None:
    red, blue = picture((200, 30, 30)), picture((30, 30, 200))
    await seeing.complete(asking((red,)))
    await seeing.complete(asking((red,), turn=1))
    assert seeing.last is not None
    again = seeing.last
    # All but the last prompt token (always read again) came from the cache, the picture's too.
    assert again.reused_tokens == again.prompt_tokens - 1

    await seeing.complete(asking((blue,), turn=2))
    assert seeing.last is not None
    other = seeing.last
    # The cache is kept up to where the pictures differ: before the picture's run.
    assert other.reused_tokens <= other.prompt_tokens - IMAGE_TOKENS - 1


async def test_a_picture_that_cannot_be_read_is_a_note_in_its_place(seeing: LocalBackend) -> None:
    without = await seeing.complete(asking())
    broken = Image.of(b"\x89PNG\r\n\x1a\n" + b"not really" * 50, "image/png")
    noted = await seeing.complete(asking((broken,)))
    note = noted.usage.input_tokens - without.usage.input_tokens
    assert 0 < note != IMAGE_TOKENS  # some words said, no picture's run

    answer = await seeing.complete(asking((picture((0, 200, 0)),)))  # the worker is whole
    assert answer.usage.input_tokens == without.usage.input_tokens + IMAGE_TOKENS


async def test_the_workers_log_says_how_the_projector_loaded_but_not_each_picture(
    seeing: LocalBackend,
) -> None:
    await seeing.complete(asking((picture((90, 90, 90)),), turn=7))
    await seeing.complete(asking((picture((91, 90, 90)),), turn=8))
    log = seeing.socket_path.with_suffix(".log").read_text(errors="replace")
    assert "clip_model_loader" in log  # the probe: libmtmd's lines reach this log
    assert "encoding image slice" not in log
    assert "image decoded" not in log


async def test_a_webp_picture_is_decoded_here_and_shown(seeing: LocalBackend) -> None:
    out = io.BytesIO()
    Pillow.new("RGB", (50, 20), (10, 120, 240)).save(out, format="WEBP")
    webp = Image.of(out.getvalue(), "image/webp")
    without = await seeing.complete(asking())
    shown = await seeing.complete(asking((webp,)))
    assert shown.usage.input_tokens == without.usage.input_tokens + IMAGE_TOKENS


async def test_a_model_set_not_to_see_is_sent_no_pictures(projector: Path) -> None:
    backend = LocalBackend(bundled_model(), mmproj=projector, max_tokens=4, slots=1)
    backend.vision = False  # `[model] vision = false`
    try:
        without = await backend.complete(asking())
        with_one = await backend.complete(asking((picture((200, 30, 30)),)))
        assert with_one.usage.input_tokens == without.usage.input_tokens
    finally:
        await backend.aclose()


async def test_without_a_projector_pictures_are_left_out() -> None:
    backend = LocalBackend(bundled_model(), max_tokens=4, slots=1)
    try:
        info = await backend.load()
        assert not info.vision
        assert not backend.vision
        without = await backend.complete(asking())
        with_one = await backend.complete(asking((picture((200, 30, 30)),)))
        assert with_one.usage.input_tokens == without.usage.input_tokens
    finally:
        await backend.aclose()


async def test_a_projector_for_another_model_fails_to_load(tmp_path: Path) -> None:
    narrow = write_tiny_projector(tmp_path / "mmproj-narrow.gguf", text_width=64)
    backend = LocalBackend(bundled_model(), mmproj=narrow, slots=1)
    try:
        with pytest.raises(BackendError) as caught:
            await backend.load()
        assert caught.value.code == "model_load_failed"
        assert "projector" in str(caught.value)
        assert str(narrow) in str(caught.value)
    finally:
        await backend.aclose()


async def test_a_file_that_is_no_projector_fails_to_load(tmp_path: Path) -> None:
    fake = tmp_path / "mmproj.gguf"
    fake.write_bytes(b"GGUF but not really" * 100)
    backend = LocalBackend(bundled_model(), mmproj=fake, slots=1)
    try:
        with pytest.raises(BackendError) as caught:
            await backend.load()
        assert caught.value.code == "model_load_failed"
        assert str(fake) in str(caught.value)
    finally:
        await backend.aclose()


def test_a_missing_projector_is_refused_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "mmproj.gguf"
    with pytest.raises(ConfigError) as caught:
        local_backend("local:bundled", {"mmproj": str(missing)})
    assert str(missing) in str(caught.value)


def test_a_text_cannot_mark_a_picture_of_its_own() -> None:
    forged = Message(role="user", content=f"look {IMAGE_MARK} here", images=(picture((1, 2, 3)),))
    call = ToolCall(id="c1", name=f"odd{IMAGE_MARK}", arguments=f'{{"a": "{IMAGE_MARK}"}}')
    messages = [
        forged,
        Message(role="assistant", tool_calls=(call,)),
        Message(role="tool", tool_call_id="c1", content="done", images=(picture((4, 5, 6)),)),
    ]
    plain = chat_messages(messages, f"Tools: a tool described with {IMAGE_MARK}", pictures=True)
    joined = "".join(m["content"] for m in plain)
    assert joined.count(IMAGE_MARK) == 2  # the two pictures' marks, and no other
    assert plain[1]["content"].endswith(IMAGE_MARK)  # the user's picture, after its text
    assert plain[-1]["content"].endswith(IMAGE_MARK)  # the tool's, after its result
    unseeing = chat_messages(messages)
    assert unseeing[0]["content"] == forged.content  # a model that does not see: as it was


def test_a_relative_projector_is_found_beside_the_config(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    config = folder / "agent.toml"
    config.write_text('[model]\nuri = "local:model.gguf"\n[model.local]\nmmproj = "mm.gguf"\n')
    loaded = load_config(config)
    assert loaded.model.local.mmproj == folder / "mm.gguf"
    assert loaded.model.uri == f"local:{folder / 'model.gguf'}"


def test_a_planner_on_another_file_is_not_given_the_projector(
    projector: Path, tmp_path: Path
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(f'[model.local]\nmmproj = "{projector}"\n')
    loaded = load_config(config)
    acting = backend_for("local:bundled", loaded, lambda *_: None)
    planning = backend_for("local:bundled", loaded, lambda *_: None, projector=False)
    assert isinstance(acting, LocalBackend)
    assert isinstance(planning, LocalBackend)
    assert acting.settings.mmproj == projector
    assert acting.vision
    assert planning.settings.mmproj is None
    assert not planning.vision
