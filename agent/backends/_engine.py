"""A GGUF model loaded by llama.cpp, answering `ModelRequest`s: what a model worker runs.

Local models are told the tools in their system message and write each call as JSON, and their
decoding is held to the JSON schema of a call to one of the tools (grammar-constrained, see
`_decode`), so the name is always a real tool and the arguments always parse. An answer that is
still not a valid call (cut off, or breaking a rule a grammar cannot express) is closed and
checked again, and failing that the model is asked once more with the reason; if that fails too,
the answer goes back as text and the loop tells the model what was wrong.

Everything here blocks, and runs only in the model worker's process (`model_worker`): a crash
of llama.cpp ends that process, never a runner's.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import llama_cpp
from llama_cpp import _internals
from llama_cpp.llama_grammar import LlamaGrammar

from agent.backends import _native_log as native_log
from agent.backends._chat import chat_messages, describe_tools, read_call, tool_call_schema
from agent.backends._cpu import choose_path, cpu_flags, describe
from agent.backends._decode import Decoder, chat_template, tokenize_seeing
from agent.backends._gguf import read_metadata
from agent.backends._vision import Picture, Projector
from agent.backends._worker_proto import (
    GenerateOptions,
    Generation,
    ModelInfo,
    WorkerInfo,
    WorkerSettings,
)
from agent.backends.base import Delta, Message, ModelRequest, ModelResponse, Usage
from base.errors import BackendError, ConfigError, ErrorCode

# llama-cpp-python's JSON-schema grammars let a string hold any character but `"` and `\`.
_ANY_CHAR = r'char ::= [^"\\]'
_JSON_CHAR = r'char ::= [^"\\\x7F\x00-\x1F]'

#: the context used when the model's own is larger and no `n_ctx` is set (KV memory grows with it)
DEFAULT_MAX_CONTEXT = 8192


class Engine:
    """A loaded model with its KV slots. Made by `Engine.load`. Not for concurrent use: the
    worker runs one generation at a time."""

    def __init__(self, model: _internals.LlamaModel, decoder: Decoder, info: WorkerInfo) -> None:
        self._model = model
        self.decoder = decoder
        self.info = info
        self.template = chat_template(model)
        self._grammars: dict[tuple[str, ...], str] = {}

    @classmethod
    def load(cls, settings: WorkerSettings) -> Engine:
        """Load the model `settings` name. Raises `ConfigError` for a file that is missing or
        not a model llama.cpp loads."""
        started = time.perf_counter()
        path = settings.path
        if not path.is_file():
            raise ConfigError(f"no model file at {path}")
        flags = cpu_flags()
        cpu = choose_path(flags, repack=settings.repack)
        trained = _read_trained_context(path)
        n_ctx = settings.n_ctx or min(trained or DEFAULT_MAX_CONTEXT, DEFAULT_MAX_CONTEXT)
        llama_cpp.llama_backend_init()
        native_log.install()  # llama.cpp's warnings and errors reach the worker's log
        params = llama_cpp.llama_model_default_params()
        params.use_extra_bufts = cpu.repack
        try:
            # Not hushed (verbose=False points the process's stderr at /dev/null while it
            # loads): what llama.cpp says is sorted by `native_log`, warnings and errors kept.
            model = _internals.LlamaModel(path_model=str(path), params=params, verbose=True)
        except (ValueError, RuntimeError) as error:
            raise ConfigError(f"llama.cpp could not load {path}: {error}") from error
        context = llama_cpp.llama_context_default_params()
        context.n_ctx = n_ctx
        context.n_batch = context.n_ubatch = min(512, n_ctx)
        # As llama-cpp-python's `Llama` sets it up (and as this backend ran in-process before).
        context.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        # Unset, llama.cpp's defaults: half the CPUs generate (more only contend for memory
        # bandwidth, and collapse when another process is busy), all of them evaluate prompts.
        cpus = os.cpu_count() or 1
        context.n_threads = settings.threads or max(cpus // 2, 1)
        context.n_threads_batch = settings.threads or cpus
        decoder = Decoder(model, context, slots=settings.slots)
        if settings.mmproj is not None:
            try:
                decoder.projector = Projector.load(settings.mmproj, model, context.n_threads_batch)
            except ConfigError:
                decoder.close()
                raise
        meta = model.metadata()
        arch = meta.get("general.architecture", "unknown")
        info = ModelInfo(
            path=path,
            name=meta.get("general.name") or path.stem,
            architecture=arch,
            trained_context=_int(meta.get(f"{arch}.context_length")),
            context_window=n_ctx,
            expert_count=_int(meta.get(f"{arch}.expert_count")),
            expert_used_count=_int(meta.get(f"{arch}.expert_used_count")),
            size_bytes=path.stat().st_size,
            vision=decoder.projector is not None,
        )
        worker = WorkerInfo(
            pid=os.getpid(),
            model=info,
            settings=settings,
            load_seconds=time.perf_counter() - started,
            repack=cpu.repack,
            path_reason=cpu.reason,
            system_info=llama_cpp.llama_print_system_info().decode(errors="replace").strip(),
            cpu=describe(flags),
        )
        return cls(model, decoder, worker)

    def complete(
        self,
        request: ModelRequest,
        options: GenerateOptions,
        *,
        on_delta: Callable[[Delta], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> tuple[ModelResponse, Generation | None]:
        """Answer `request`; with tools and `tool_choice="required"` the answer is one call.
        Also returns the last generation's figures.

        Raises `BackendError` (`context_exceeded`, `generation_failed`, `bad_request`), none of
        them retryable.
        """
        name = f"local:{self.info.model.path}"
        constrained = bool(request.tools) and request.tool_choice == "required"
        grammar = self._grammar(request, name) if constrained else None
        messages = list(request.messages)
        usage = Usage()
        problem = ""
        last: Generation | None = None
        for attempt in range(options.repair_attempts + 1):
            last = self._generate(request, options, messages, grammar, on_delta, cancelled)
            usage += Usage(input_tokens=last.prompt_tokens, output_tokens=last.output_tokens)
            if not request.tools:
                return ModelResponse(text=last.text, usage=usage, model=name), last
            call_id = f"call_{request.turn}_{attempt}"
            try:
                call = read_call(
                    last.text, request.tools, call_id=call_id, cut=last.stop == "length"
                )
            except ValueError as error:
                problem = str(error)
            else:
                return ModelResponse(tool_calls=(call,), usage=usage, model=name), last
            if not constrained or (cancelled is not None and cancelled()):
                break  # free text was allowed, and this is text
            messages += [
                Message(role="assistant", content=last.text),
                Message(
                    role="user",
                    content=f"That was not a valid tool call: {problem}. Answer again with one "
                    'JSON object {"name": ..., "arguments": {...}}.',
                ),
            ]
        # Given back as text: the loop tells the model its reply had no valid call.
        text = last.text if last is not None else ""
        return ModelResponse(text=text, usage=usage, model=name), last

    def close(self) -> None:
        self.decoder.close()
        self._model.close()  # type: ignore[no-untyped-call]

    def _grammar(self, request: ModelRequest, name: str) -> str:
        """The grammar of one call to one of the request's tools. Raises `BackendError` for a
        tool whose schema llama.cpp's converter cannot turn into a grammar."""
        key = tuple(tool.model_dump_json() for tool in request.tools)
        gbnf = self._grammars.get(key)
        if gbnf is None:
            schema = json.dumps(tool_call_schema(request.tools))
            try:
                gbnf = LlamaGrammar.from_json_schema(schema, verbose=False)._grammar
            except (AssertionError, ValueError, KeyError, TypeError) as error:
                # The converter asserts on what it cannot express; name the tools.
                raise BackendError(
                    f"{name}: the tools' schemas cannot be made into a grammar "
                    f"({type(error).__name__}: {error}); tools: "
                    + ", ".join(tool.name for tool in request.tools),
                    code=ErrorCode.BAD_REQUEST,
                    retryable=False,
                ) from error
            # JSON strings hold no raw control characters (a newline is written \n). Keeping
            # them out also makes a small model close its strings instead of running on into
            # new lines of made-up prompt.
            gbnf = self._grammars[key] = gbnf.replace(_ANY_CHAR, _JSON_CHAR)
        return gbnf

    def _generate(  # noqa: PLR0917 - private, called once
        self,
        request: ModelRequest,
        options: GenerateOptions,
        messages: list[Message],
        grammar: str | None,
        on_delta: Callable[[Delta], None] | None,
        cancelled: Callable[[], bool] | None,
    ) -> Generation:
        try:
            prompt, pictures = self._prompt(request, messages, grammar)
            window = self.info.model.context_window
            room = window - len(prompt)
            if room < 16:
                raise BackendError(
                    f"the prompt is {len(prompt):,} tokens and local:{self.info.model.path} "
                    f"holds {window:,}: set a larger n_ctx, or give it less",
                    code=ErrorCode.CONTEXT_EXCEEDED,
                    retryable=False,
                )
            kind: Literal["text", "tool_call"] = "tool_call" if grammar is not None else "text"
            return self.decoder.generate(
                prompt,
                # the request's cap (a tool's) within the backend's own, never past it
                max_tokens=min(options.max_tokens, request.max_output_tokens or room, room),
                grammar=grammar,
                temperature=options.temperature,
                repeat_penalty=options.repeat_penalty,
                seed=options.seed + request.turn,
                on_text=(lambda piece: on_delta(Delta(kind, piece))) if on_delta else None,
                cancelled=cancelled,
                pictures=pictures,
            )
        except (ValueError, RuntimeError) as error:
            raise BackendError(
                f"local:{self.info.model.path}: {error}",
                code=ErrorCode.GENERATION_FAILED,
                retryable=False,
            ) from error
        finally:
            if self.decoder.projector is not None:
                self.decoder.projector.release()  # the prompt's pictures, read or not

    def _prompt(
        self, request: ModelRequest, messages: list[Message], grammar: str | None
    ) -> tuple[list[int], dict[int, Picture] | None]:
        """The prompt's tokens, and its pictures by where their runs begin (None when it shows
        the model none). Raises `ValueError` for a template that fails or a picture that
        cannot be read."""
        note = describe_tools(request.tools, constrained=grammar is not None)
        projector = self.decoder.projector
        images = [i for m in messages for i in m.images] if projector is not None else []
        plain = chat_messages(messages, note if request.tools else None, pictures=bool(images))
        parts = self.template.render_parts(plain)
        if projector is None or not images:
            return self.decoder.tokenize(parts), None
        return tokenize_seeing(self._model, parts, images, projector)


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
