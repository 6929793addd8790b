"""Token-by-token decoding on a loaded llama.cpp model, optionally held to a grammar.

llama.cpp's own grammar sampler checks every token of the vocabulary against the grammar at every
step, a large part of each step on a small model (its tokens/s are 0.65x of free decoding in
`bench/models.py`; 0.39x when first measured). Most of the time the model's own first choice
already fits the grammar, so this decoder asks the grammar about that one token first, then about
the few best candidates, and only when none of those fits does it filter the whole vocabulary.
With greedy decoding the output is the same as filtering everything first, at a fraction of the
cost. (With sampling, a drawn token the grammar forbids is replaced by the likeliest one it
allows.)

The model has several KV-cache slots (each a llama.cpp context over the one loaded model). A slot
holds its last prompt and answer; a new prompt goes to the slot it shares the longest start with
(the same system prompt, tools and task, as each step's prompt does), and only its new tail is
evaluated. A prompt that shares little with every slot takes the one used least recently, so a
planner's prompt and an executor's on the same model do not evict each other.

Everything here blocks; the model worker runs it in a thread, one generation at a time.
"""

from __future__ import annotations

import codecs
import ctypes
import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import llama_cpp
import numpy as np
import numpy.typing as npt
from llama_cpp import _internals

from agent.backends._chat import IMAGE_MARK, ChatTemplate
from agent.backends._worker_proto import Generation

if TYPE_CHECKING:
    from agent.backends._vision import Picture, Projector
    from base.images import Image

#: how many of the last tokens `repeat_penalty` looks at (llama.cpp's default)
PENALTY_WINDOW = 64
#: candidates asked about, best first, before the whole vocabulary is filtered
SHORTLIST = 32
#: a slot is worth reusing for a prompt only when they share at least this many tokens (more
#: than a chat template's opening), or the whole of the shorter of the two
MIN_SHARED = 64
_TOKEN = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


def tokenize(model: _internals.LlamaModel, parts: Sequence[tuple[str, bool]]) -> list[int]:
    """The tokens of a prompt given as (piece, is_text) parts (`ChatTemplate.render_parts`): a
    text's control-token look-alikes stay plain text; the template's pieces are read with their
    special tokens. (The chat template writes the BOS token itself where the model wants one.)"""
    tokens: list[int] = []
    for piece, is_text in parts:
        tokens += model.tokenize(piece.encode(), add_bos=False, special=not is_text)
    return tokens


def tokenize_seeing(
    model: _internals.LlamaModel,
    parts: Sequence[tuple[str, bool]],
    images: Sequence[Image],
    projector: Projector,
) -> tuple[list[int], dict[int, Picture]]:
    """As `tokenize`, for a prompt whose texts hold an `IMAGE_MARK` where each of `images` goes
    (in order): the tokens, with each picture's run held by its place-holding tokens, and the
    pictures by where their runs begin. A picture that cannot be read is a note in its place.
    Raises `ValueError` if the marks and the images do not pair up."""
    tokens: list[int] = []
    pictures: dict[int, Picture] = {}
    left = list(images)
    for piece, is_text in parts:
        for n, text in enumerate(piece.split(IMAGE_MARK)):
            if n:
                if not left:
                    raise ValueError("the prompt marks more pictures than it has")
                image = left.pop(0)
                try:
                    found_pieces = projector.pieces(image)
                except ValueError as error:
                    note = f"[a picture ({image.media_type}) that could not be shown: {error}]"
                    found_pieces = [model.tokenize(note.encode(), add_bos=False, special=False)]
                for found in found_pieces:
                    if isinstance(found, list):
                        tokens += found
                    else:
                        pictures[len(tokens)] = found
                        tokens += found.placeholders()
            tokens += model.tokenize(text.encode(), add_bos=False, special=not is_text)
    if left:
        raise ValueError(f"{len(left)} of the prompt's pictures have no place in it")
    return tokens, pictures


def chat_template(model: _internals.LlamaModel) -> ChatTemplate:
    """The model's own chat template (ChatML if its file has none), with its BOS and EOS."""
    bos, eos = (
        model.detokenize([token], special=True).decode(errors="replace") if token >= 0 else ""
        for token in (model.token_bos(), model.token_eos())
    )
    return ChatTemplate(model.metadata().get("tokenizer.chat_template"), bos=bos, eos=eos)


class _Grammar:
    """One llama.cpp grammar sampler, reset for each generation."""

    def __init__(self, vocab: Any, gbnf: str) -> None:
        self._sampler = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root")
        if not self._sampler:
            raise ValueError("llama.cpp could not parse the grammar")

    def reset(self) -> None:
        llama_cpp.llama_sampler_reset(self._sampler)

    def accept(self, token: int) -> None:
        llama_cpp.llama_sampler_accept(self._sampler, token)

    def filter(self, data: Any, size: int) -> None:
        """Set the logit of every candidate in `data[:size]` the grammar forbids to -inf."""
        array = llama_cpp.llama_token_data_array(data=data, size=size, selected=-1, sorted=False)
        llama_cpp.llama_sampler_apply(self._sampler, ctypes.byref(array))

    def close(self) -> None:
        if self._sampler:
            llama_cpp.llama_sampler_free(self._sampler)
            self._sampler = None


class Slot:
    """One KV cache: a llama.cpp context over the shared model, and the tokens it holds."""

    def __init__(self, index: int, model: _internals.LlamaModel, params: Any, n_batch: int) -> None:
        self.index = index
        self.ctx = _internals.LlamaContext(model=model, params=params, verbose=False)
        self._batch = _internals.LlamaBatch(n_tokens=n_batch, embd=0, n_seq_max=1, verbose=False)
        self.n_batch = n_batch
        self.tokens: list[int] = []
        #: when it last served a prompt (a counter: larger is more recent)
        self.used = 0

    def shared(self, prompt: Sequence[int]) -> int:
        """How many tokens `prompt` starts with that this slot holds, in order."""
        same = 0
        for a, b in zip(self.tokens, prompt, strict=False):
            if a != b:
                break
            same += 1
        return same

    def truncate(self, keep: int) -> None:
        """Forget everything after the first `keep` tokens."""
        self.ctx.kv_cache_seq_rm(0, keep, -1)
        del self.tokens[keep:]

    def eval(self, tokens: Sequence[int]) -> None:
        """Add `tokens` to the cache in one batch (at most `n_batch`); the logits of the last
        are then `logits()`. Raises `RuntimeError` if llama.cpp fails."""
        self._batch.set_batch(batch=tokens, n_past=len(self.tokens), logits_all=False)
        self.ctx.decode(self._batch)
        self.tokens += tokens

    def logits(self) -> Any:
        return llama_cpp.llama_get_logits_ith(self.ctx.ctx, -1)

    def close(self) -> None:
        self._batch.close()  # type: ignore[no-untyped-call]
        self.ctx.close()  # type: ignore[no-untyped-call]


class Decoder:
    """Generates from one loaded model, keeping `slots` KV caches between calls.

    `context_params` are llama.cpp's for each slot's context (`n_ctx`, `n_batch`, threads).
    The slots' contexts are made here, at load (each takes a moment and its KV memory), so that
    no step pays for one.
    """

    def __init__(self, model: _internals.LlamaModel, context_params: Any, *, slots: int) -> None:
        self.model = model
        self._params = context_params
        self.n_ctx: int = context_params.n_ctx
        self._n_batch: int = context_params.n_batch
        self._slots = [Slot(i, model, context_params, self._n_batch) for i in range(max(1, slots))]
        #: the multimodal projector, for a model that sees (`_vision`)
        self.projector: Projector | None = None
        self._clock = 0
        self._vocab = model.vocab
        self._n_vocab = model.n_vocab()
        self._grammars: dict[str, _Grammar] = {}
        # Reused buffers: the whole vocabulary as llama_token_data, and a short list.
        self._all = (llama_cpp.llama_token_data * self._n_vocab)()
        self._all_np: npt.NDArray[Any] = np.frombuffer(self._all, dtype=_TOKEN)  # type: ignore[call-overload]
        self._short = (llama_cpp.llama_token_data * SHORTLIST)()
        self._short_np: npt.NDArray[Any] = np.frombuffer(self._short, dtype=_TOKEN)  # type: ignore[call-overload]

    def tokenize(self, parts: Sequence[tuple[str, bool]]) -> list[int]:
        return tokenize(self.model, parts)

    def generate(
        self,
        prompt: Sequence[int],
        *,
        max_tokens: int,
        grammar: str | None = None,
        temperature: float = 0.0,
        repeat_penalty: float = 1.0,
        seed: int = 0,
        on_text: Callable[[str], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
        pictures: dict[int, Picture] | None = None,
    ) -> Generation:
        """Evaluate `prompt` (reusing the longest cached prefix of any slot) and decode up to
        `max_tokens` tokens.

        Stops at an end-of-generation token (the grammar allows one only once its text is
        complete), at `max_tokens`, when the context is full, or when `cancelled()` turns true.
        `repeat_penalty` (llama.cpp's: above 1 discourages the last `PENALTY_WINDOW` tokens in
        the context, the prompt's included, as llama.cpp's server counts them) keeps a small
        model from writing the same token for ever, or copying the prompt back. Raises
        `ValueError` for a grammar llama.cpp cannot parse or a prompt longer than the context.
        `pictures` are the runs of the prompt that are pictures (`tokenize_seeing`).
        """
        started = time.perf_counter()
        n_ctx = self.n_ctx
        if len(prompt) >= n_ctx:
            raise ValueError(f"the prompt is {len(prompt)} tokens; the context holds {n_ctx}")
        rules = self._grammar(grammar) if grammar is not None else None
        if rules is not None:
            rules.reset()
        slot, shared = self._slot_for(prompt)
        reused = self._prefill(slot, list(prompt), shared, cancelled, pictures or {})
        rng = np.random.default_rng(seed)
        decode = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pieces: list[str] = []
        first = 0.0
        corrected = 0
        stop: Literal["end", "length"] = "length"
        produced = 0
        decode_started = time.perf_counter()
        while produced < max_tokens and len(slot.tokens) < n_ctx:
            if cancelled is not None and cancelled():
                break
            # A picture's place-holders are no tokens (and no int32 either).
            recent = np.asarray([t for t in slot.tokens[-PENALTY_WINDOW:] if t >= 0], np.intc)
            token, fixed = self._choose(slot, rules, temperature, repeat_penalty, recent, rng)
            corrected += fixed
            if produced == 0:
                first = time.perf_counter() - started
            if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                stop = "end"
                break
            if rules is not None:
                rules.accept(token)
            produced += 1
            piece = decode.decode(self.model.detokenize([token]))
            if piece:
                pieces.append(piece)
                if on_text is not None:
                    on_text(piece)
            slot.eval([token])
        if produced == 0 and first == 0.0:
            first = time.perf_counter() - started
        tail = decode.decode(b"", final=True)
        if tail:
            pieces.append(tail)
        return Generation(
            text="".join(pieces),
            prompt_tokens=len(prompt),
            reused_tokens=reused,
            output_tokens=produced,
            first_token_seconds=first,
            decode_seconds=time.perf_counter() - decode_started,
            stop=stop,
            corrected=corrected,
            constrained=rules is not None,
            slot=slot.index,
        )

    def close(self) -> None:
        if self.projector is not None:
            self.projector.close()
            self.projector = None
        for rules in self._grammars.values():
            rules.close()
        self._grammars.clear()
        for slot in self._slots:
            slot.close()
        self._slots.clear()

    def _grammar(self, gbnf: str) -> _Grammar:
        rules = self._grammars.get(gbnf)
        if rules is None:
            rules = self._grammars[gbnf] = _Grammar(self._vocab, gbnf)
        return rules

    def _slot_for(self, prompt: Sequence[int]) -> tuple[Slot, int]:
        """The slot sharing the longest start with `prompt`, if that is worth keeping (more than
        a chat template's opening); else the one used least recently. Also how many of the
        prompt's tokens the chosen slot holds."""
        self._clock += 1
        shares = [(slot.shared(prompt), slot) for slot in self._slots]
        shared, best = max(shares, key=lambda pair: pair[0])
        if not (shared > 0 and shared >= min(MIN_SHARED, len(prompt) - 1, len(best.tokens))):
            shared, best = min(shares, key=lambda pair: pair[1].used)
        best.used = self._clock
        return best, shared

    def _prefill(
        self,
        slot: Slot,
        prompt: list[int],
        shared: int,
        cancelled: Callable[[], bool] | None,
        pictures: dict[int, Picture],
    ) -> int:
        """Bring the slot's cache, which holds the first `shared` tokens of `prompt`, to hold all
        of it; return how many were kept. Stops between batches once `cancelled()` (the cache
        then holds a prefix of it). A picture's run is evaluated whole."""
        # The last prompt token is always evaluated again: its logits start the answer.
        keep = min(shared, len(prompt) - 1)
        for start, run in pictures.items():
            if start < keep < start + run.n_tokens:
                keep = start
        if prompt and prompt[-1] < 0:
            raise ValueError("a prompt cannot end with a picture")
        slot.truncate(keep)
        starts = sorted(pictures)
        at = keep
        while at < len(prompt):
            if cancelled is not None and cancelled():
                break
            picture = pictures.get(at)
            if picture is not None:
                if self.projector is None:
                    raise ValueError("a prompt with pictures, and no projector loaded")
                self.projector.evaluate(slot.ctx.ctx, picture, len(slot.tokens), slot.n_batch)
                slot.tokens += picture.placeholders()
                at += picture.n_tokens
                continue
            end = min([at + slot.n_batch, len(prompt), *(s for s in starts if s > at)])
            slot.eval(prompt[at:end])
            at = end
        return keep

    def _choose(  # noqa: PLR0917 - private, called once
        self,
        slot: Slot,
        rules: _Grammar | None,
        temperature: float,
        repeat_penalty: float,
        recent: npt.NDArray[np.intc],
        rng: np.random.Generator,
    ) -> tuple[int, int]:
        """The next token, and 1 if the grammar overruled the model's first choice (else 0)."""
        pointer = slot.logits()
        logits: npt.NDArray[np.float32] = np.ctypeslib.as_array(pointer, shape=(self._n_vocab,))
        if repeat_penalty != 1.0 and len(recent):
            seen = np.unique(recent)
            values = logits[seen]
            logits[seen] = np.where(values > 0, values / repeat_penalty, values * repeat_penalty)
        if temperature > 0:
            scaled = logits.astype(np.float64) / temperature
            scaled -= scaled.max()
            weights = np.exp(scaled)
            token = int(rng.choice(self._n_vocab, p=weights / weights.sum()))
        else:
            token = int(logits.argmax())
        if rules is None:
            return token, 0
        short = self._short_np
        short["id"][0] = token
        short["logit"][0] = 0.0
        rules.filter(self._short, 1)
        if math.isfinite(float(short["logit"][0])):
            return token, 0
        # The best few, best first: usually one of them fits.
        best = np.argpartition(logits, -SHORTLIST)[-SHORTLIST:]
        best = best[np.argsort(logits[best])[::-1]]
        short["id"] = best
        short["logit"] = logits[best]
        rules.filter(self._short, SHORTLIST)
        allowed = np.isfinite(short["logit"])
        if allowed.any():
            return int(short["id"][int(np.argmax(allowed))]), 1
        everything = self._all_np
        everything["id"] = np.arange(self._n_vocab, dtype=np.int32)
        everything["logit"] = logits
        rules.filter(self._all, self._n_vocab)
        filtered = everything["logit"]
        if not np.isfinite(filtered).any():
            raise ValueError("the grammar allows no token here")
        return int(filtered.argmax()), 1
