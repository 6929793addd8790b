"""A tiny random-weight multimodal projector (`mmproj`) GGUF, written on demand for tests.

No vision model with its projector is on PyPI, so the tests write one: a CLIP-style vision
encoder of one block, 64 wide, over 32x32 pictures cut in 8x8 patches, and a LLaVA-style MLP
projector (`mlp`) into the language model's width. Its weights are noise, so what the model makes
of a picture means nothing, but to llama.cpp's libmtmd it is a real projector: it loads with the
language model, reads a PNG, resizes it, encodes it into 16 image tokens and the language model
attends to them.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

#: the encoder's width, the pictures' side and the patches' side, in pixels
WIDTH, SIDE, PATCH = 64, 32, 8
#: image tokens a picture becomes: one per patch (the MLP projector drops the class token)
IMAGE_TOKENS = (SIDE // PATCH) ** 2


def write_tiny_projector(path: Path, text_width: int, seed: int = 0) -> Path:
    """Write the projector for a language model `text_width` wide at `path`; return it."""
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.has_llava_projector", True)
    writer.add_string("clip.projector_type", "mlp")
    writer.add_uint32("clip.vision.image_size", SIDE)
    writer.add_uint32("clip.vision.patch_size", PATCH)
    writer.add_uint32("clip.vision.embedding_length", WIDTH)
    writer.add_uint32("clip.vision.feed_forward_length", WIDTH)
    writer.add_uint32("clip.vision.projection_dim", text_width)
    writer.add_uint32("clip.vision.block_count", 1)
    writer.add_uint32("clip.vision.attention.head_count", 4)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-5)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    writer.add_bool("clip.use_gelu", True)

    def noise(name: str, *shape: int, half: bool = False) -> None:
        values = rng.standard_normal(shape) * 0.02
        writer.add_tensor(name, values.astype(np.float16 if half else np.float32))

    def norm(name: str) -> None:
        writer.add_tensor(f"{name}.weight", np.ones(WIDTH, np.float32))
        writer.add_tensor(f"{name}.bias", np.zeros(WIDTH, np.float32))

    noise("v.class_embd", WIDTH)
    noise("v.patch_embd.weight", WIDTH, 3, PATCH, PATCH, half=True)  # a convolution: F16
    noise("v.position_embd.weight", IMAGE_TOKENS + 1, WIDTH)
    norm("v.pre_ln")
    for part in ("attn_q", "attn_k", "attn_v", "attn_out", "ffn_up", "ffn_down"):
        noise(f"v.blk.0.{part}.weight", WIDTH, WIDTH, half=True)
        noise(f"v.blk.0.{part}.bias", WIDTH)
    norm("v.blk.0.ln1")
    norm("v.blk.0.ln2")
    noise("mm.0.weight", text_width, WIDTH, half=True)
    noise("mm.0.bias", text_width)
    noise("mm.2.weight", text_width, text_width, half=True)
    noise("mm.2.bias", text_width)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
