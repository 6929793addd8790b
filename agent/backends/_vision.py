"""Pictures for a local model that sees: its multimodal projector (`mmproj`), through llama.cpp's
libmtmd.

A vision model in GGUF form is two files: the language model, and a projector that turns a
picture into embeddings in the language model's own space (CLIP-like encoders: LLaVA, Gemma 3,
SmolVLM, Pixtral...). A picture becomes a run of "image tokens" that take positions in the KV
cache like text, with the few text tokens the projector's format puts around them.

How a prompt is made (`Projector.pieces`): our own tokenizer still cuts every text (so a page's
text can never be read as a control token, as `_chat` keeps it), and each picture is given to
libmtmd alone, whose chunks are taken as they come. A picture is decoded here (Pillow) and given
to libmtmd as pixels, and evaluated into a slot's context with libmtmd's helper, which knows
what each projector needs (non-causal attention, batch sizes). A picture that cannot be read is
a short note in the prompt in its place (`tokenize_seeing`), not a failed call.

Projectors whose model numbers image positions in two dimensions (M-RoPE: Qwen2-VL and its kin)
are refused at load: the decoder counts one position a token.
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp
from llama_cpp import _internals
from llama_cpp import mtmd_cpp as mtmd
from PIL import Image as Pillow

from agent.backends import _native_log as native_log
from base.errors import ConfigError
from base.images import Image

_TEXT = mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT


@dataclass(frozen=True)
class Picture:
    """A picture's run in a prompt: libmtmd's chunk (its chunks are held by the projector until
    `release`), how many positions it takes, and a key the run's place-holding tokens are made
    from (its bytes' digest)."""

    chunk: Any
    n_tokens: int
    key: int

    def placeholders(self) -> list[int]:
        """What stands for it in a slot's token list: negative (never a real token), and the
        same for the same picture (its whole digest), so a prompt that repeats it reuses its
        cache and no other picture can."""
        return [-1 - self.key] * self.n_tokens


Piece = list[int] | Picture


class Projector:
    """A loaded projector. Made by `Projector.load`; `close` frees it."""

    def __init__(self, ctx: Any, path: Path) -> None:
        self._ctx = ctx
        self.path = path
        self._marker = mtmd.mtmd_default_marker()
        self._owned: list[Any] = []

    @classmethod
    def load(cls, path: Path, model: _internals.LlamaModel, threads: int) -> Projector:
        """Load the projector at `path` for `model`. Raises `ConfigError` for a missing file,
        one llama.cpp cannot load with this model, or one with no vision encoder."""
        if not path.is_file():
            raise ConfigError(f"no projector file at {path} (mmproj)")
        params = mtmd.mtmd_context_params_default()
        params.use_gpu = False
        params.print_timings = False
        params.n_threads = threads
        params.warmup = False
        with native_log.loud():  # installed by the engine, before the model loaded
            ctx = mtmd.mtmd_init_from_file(str(path).encode(), model.model, params)
        if not ctx:
            raise ConfigError(
                f"llama.cpp could not load the projector {path} with this model (mmproj): is "
                "it the one made for this model? (the worker's log says why)"
            )
        projector = cls(ctx, path)
        if not mtmd.mtmd_support_vision(ctx):
            projector.close()
            raise ConfigError(f"the projector {path} has no vision encoder (mmproj)")
        if mtmd.mtmd_decode_use_mrope(ctx):
            projector.close()
            raise ConfigError(
                f"the projector {path} is for a model that places image tokens in two "
                "dimensions (M-RoPE, as Qwen2-VL does): not supported by the local backend yet"
            )
        return projector

    def pieces(self, image: Image) -> list[Piece]:
        """What `image` adds to a prompt: the projector's own text tokens around it, and the
        picture. Raises `ValueError` for a picture that cannot be read."""
        data = base64.b64decode(image.data)
        nx, ny, rgb = _pixels(data)
        bitmap = mtmd.mtmd_bitmap_init(nx, ny, (ctypes.c_uint8 * len(rgb)).from_buffer(rgb))
        if not bitmap:
            raise ValueError(f"llama.cpp could not take a picture of {nx}x{ny} pixels")
        chunks = mtmd.mtmd_input_chunks_init()
        text = mtmd.mtmd_input_text(
            text=self._marker, text_len=len(self._marker), add_special=False, parse_special=True
        )
        bitmaps = (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap)
        try:
            code = mtmd.mtmd_tokenize(self._ctx, chunks, ctypes.byref(text), bitmaps, 1)
        finally:
            mtmd.mtmd_bitmap_free(bitmap)
        if code != 0:
            mtmd.mtmd_input_chunks_free(chunks)
            raise ValueError(f"llama.cpp could not encode a picture (mtmd_tokenize {code})")
        self._owned.append(chunks)
        # The whole digest: a picture's place-holders are Python ints, never given to llama.cpp.
        key = int.from_bytes(hashlib.sha256(data).digest(), "big")
        found: list[Piece] = []
        for i in range(mtmd.mtmd_input_chunks_size(chunks)):
            chunk = mtmd.mtmd_input_chunks_get(chunks, i)
            if mtmd.mtmd_input_chunk_get_type(chunk) == _TEXT:
                count = ctypes.c_size_t()
                tokens = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
                found.append([int(tokens[j]) for j in range(count.value)])
            else:
                found.append(Picture(chunk, mtmd.mtmd_input_chunk_get_n_tokens(chunk), key))
        return found

    def evaluate(self, ctx: Any, picture: Picture, n_past: int, n_batch: int) -> None:
        """Encode `picture` and add it to the llama.cpp context `ctx` at position `n_past`.
        Raises `RuntimeError` if llama.cpp fails."""
        after = llama_cpp.llama_pos(0)
        code = mtmd.mtmd_helper_eval_chunk_single(
            self._ctx, ctx, picture.chunk, n_past, 0, n_batch, False, ctypes.byref(after)
        )
        if code != 0:
            raise RuntimeError(f"llama.cpp could not evaluate a picture (error {code})")

    def release(self) -> None:
        """Free the pictures of the last prompt (their runs are in the KV cache by now)."""
        for chunks in self._owned:
            mtmd.mtmd_input_chunks_free(chunks)
        self._owned.clear()

    def close(self) -> None:
        self.release()
        if self._ctx:
            mtmd.mtmd_free(self._ctx)
            self._ctx = None


def _pixels(data: bytes) -> tuple[int, int, bytearray]:
    """A picture's width, height and RGB bytes, decoded here (Pillow), so that llama.cpp reads
    only pixels: neither its own image decoders nor the ffmpeg it falls back on ever see the
    file. Raises `ValueError` for bytes that are no picture."""
    try:
        with Pillow.open(io.BytesIO(data)) as opened:
            rgb = opened.convert("RGB")
    except (OSError, ValueError, Pillow.DecompressionBombError) as error:
        raise ValueError(f"not a picture that can be read ({error})") from error
    return rgb.width, rgb.height, bytearray(rgb.tobytes())
