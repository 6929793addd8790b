"""The tools every runtime has. They touch nothing outside the process: the tools that act on
the world (shell, files, browser, HTTP) run in the task's sandbox and arrive with it."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import Field

from base.artifacts import ArtifactStore
from tools.registry import Registry
from tools.tool import ToolContext, ToolError, tool

#: the most `read_artifact` gives at once
MAX_READ = 16_000
#: room for read_artifact's own notes around the part it reads
_NOTE_ROOM = 200

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
_MAX_EXPONENT = 10_000
# Python computes a huge integer as long as asked, holding the GIL: `(9**9999)**9999` would stall
# the whole runner. No integer past this many bits is made.
_MAX_BITS = 100_000


def _round(number: float, ndigits: int | None = None) -> float:
    # round(1, -10**7) builds 10**(10**7) inside, for seconds.
    if ndigits is not None and abs(ndigits) > _MAX_EXPONENT:
        raise ToolError(f"cannot round to {ndigits} digits")
    return round(number, ndigits)


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt,
    "log": math.log,
    "exp": math.exp,
    "abs": abs,
    "round": _round,
    "min": min,
    "max": max,
}
_CONSTANTS = {"pi": math.pi, "e": math.e}


def _check_power(base: Any, exponent: Any) -> None:
    if abs(exponent) > _MAX_EXPONENT:
        raise ToolError(f"exponent {exponent} is too large")
    # Only int ** int grows without bound; a float result overflows instead.
    if (
        isinstance(base, int)
        and isinstance(exponent, int)
        and abs(base).bit_length() * exponent > _MAX_BITS
    ):
        raise ToolError("the result of ** would be too large")


def _evaluate(node: ast.AST) -> Any:
    match node:
        case ast.Constant(value=int() | float() as value) if not isinstance(value, bool):
            return value
        case ast.Name(id=name) if name in _CONSTANTS:
            return _CONSTANTS[name]
        case ast.BinOp(left=left, op=op, right=right) if type(op) in _BINARY:
            a, b = _evaluate(left), _evaluate(right)
            if isinstance(op, ast.Pow):
                _check_power(a, b)
            result = _BINARY[type(op)](a, b)
            if isinstance(result, int) and result.bit_length() > _MAX_BITS:
                raise ToolError(f"a number in the expression is too large (over {_MAX_BITS} bits)")
            return result
        case ast.UnaryOp(op=op, operand=operand) if type(op) in _UNARY:
            return _UNARY[type(op)](_evaluate(operand))
        case ast.Call(func=ast.Name(id=name), args=args, keywords=[]) if name in _FUNCTIONS:
            return _FUNCTIONS[name](*(_evaluate(a) for a in args))
    raise ToolError(
        f"not allowed in an expression: {ast.unparse(node)!r} (numbers, + - * / // "
        f"% **, parentheses, {', '.join(_FUNCTIONS)}, pi and e are)"
    )


#: longer input only buys the parser's memory and the evaluator's time
MAX_EXPRESSION = 1000


@tool(touches="read")
def calculate(expression: Annotated[str, Field(max_length=MAX_EXPRESSION)]) -> str:
    """Evaluate an arithmetic expression exactly as written, e.g. `(17 * 3) / 4`.

    Args:
        expression: numbers, + - * / // % ** and parentheses; sqrt, log, exp, abs, round, min,
            max; the constants pi and e.
    """
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise ToolError(f"not an expression: {exc.msg}") from None
    except (RecursionError, MemoryError):
        raise ToolError("not an expression: nested too deeply") from None
    try:
        return str(_evaluate(tree.body))
    except (ArithmeticError, ValueError, TypeError, RecursionError) as exc:
        raise ToolError(f"{type(exc).__name__}: {exc}") from None


@tool(touches="read")
def current_time() -> str:
    """The current date and time in UTC, ISO 8601."""
    return datetime.now(UTC).isoformat(timespec="seconds")


@tool(touches="read")
def read_artifact(
    ctx: ToolContext,
    name: Annotated[str, Field(min_length=1, max_length=200)],
    offset: Annotated[int, Field(ge=0)] = 0,
    length: Annotated[int, Field(ge=1, le=MAX_READ)] = 4000,
) -> str:
    """Read part of a text the task kept, such as the whole of a long tool output that was shown
    shortened (its note names the artifact and where the shown part ends).

    Args:
        name: the artifact's name, as the note gives it (e.g. output-3.txt).
        offset: the character to start at.
        length: how many characters to read (at most what the model is shown whole).
    """
    if ctx.artifacts is None:
        raise ToolError("this runner keeps no artifacts")
    if ctx.shown_chars is not None:
        # More than the model is shown whole would only be shortened into another artifact.
        length = max(1, min(length, ctx.shown_chars - _NOTE_ROOM))
    data = _artifact(ctx.artifacts, name)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ToolError(f"{name} is not text (a screenshot, say): it cannot be read here") from None
    part = text[offset : offset + length]
    end = offset + len(part)
    if end < len(text):
        more = f"{len(text) - end:,} more characters: read_artifact(name={name!r}, offset={end})"
    else:
        more = "the end"
    return f"[{name}, characters {offset:,}-{end:,} of {len(text):,}]\n{part}\n[{more}]"


def _artifact(artifacts: ArtifactStore, name: str) -> bytes:
    """The artifact `name`; never a file outside the task's artifacts."""
    try:
        return artifacts.read(name)
    except ValueError as exc:
        raise ToolError(str(exc)) from None
    except KeyError:
        kept = artifacts.names()
        raise ToolError(
            f"the task has no artifact {name!r}"
            + (f"; it has: {', '.join(kept[:20])}" if kept else "; it has none")
        ) from None


registry = Registry([calculate, current_time, read_artifact])
