"""What this machine's CPU can do, and which of llama.cpp's CPU paths a local model takes on it.

llama.cpp can copy a model's weights into "extra buffer types" at load: layouts repacked for the
CPU's wide instructions (AVX2 and AVX-512 interleaved blocks, or Intel AMX tiles). On CPUs with
AMX, llama.cpp's AMX path crashes in decode (SIGSEGV in `ggml_backend_amx_mul_mat`, llama.cpp
issue #20824), on the bundled model among others. The safe path loads the weights as they are in
the file (`use_extra_bufts = False`), which costs little (see the README's Models section for
what was measured). It is taken wherever the CPU reports AMX; a setting can force either way.

The CPU is read through `cpu_flags`, so a test can feed any CPU's flags to `choose_path`; and
`$AGENT_CPUINFO` names a file read in place of /proc/cpuinfo, so a test (or someone diagnosing a
machine they do not have) can start a real worker that believes it runs on another CPU.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

#: /proc/cpuinfo flags that mean Intel AMX (any one of them brings llama.cpp's AMX path)
AMX_FLAGS = frozenset({"amx_tile", "amx_int8", "amx_bf16"})
#: the flags worth showing a person: the instruction sets llama.cpp's CPU kernels use
SHOWN_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl",
    "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16",
)  # fmt: skip


@dataclass(frozen=True)
class CpuPath:
    """How llama.cpp loads weights on this CPU: `repack` is llama.cpp's `use_extra_bufts`."""

    repack: bool
    reason: str


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU's feature flags, from `cpuinfo` (the text of /proc/cpuinfo, or of the file
    `$AGENT_CPUINFO` names, read when None). Empty where there is no such file or it has no
    flags line (not Linux, or not x86)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path(os.environ.get("AGENT_CPUINFO") or "/proc/cpuinfo").read_text()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def choose_path(flags: frozenset[str], *, repack: bool | None = None) -> CpuPath:
    """The path for a CPU with `flags`; `repack` (a setting) overrides the choice when not None."""
    amx = sorted(flags & AMX_FLAGS)
    if repack is not None:
        setting = "on" if repack else "off"
        return CpuPath(repack, f"weight repacking {setting}, as set ([model.local] repack)")
    if amx:
        return CpuPath(
            False,
            f"this CPU has AMX ({', '.join(amx)}): weights are used as stored, not repacked, "
            "since llama.cpp's AMX path crashes (llama.cpp issue #20824)",
        )
    return CpuPath(True, "no AMX: llama.cpp repacks weights for this CPU's instructions")


def describe(flags: frozenset[str]) -> str:
    """The CPU's architecture and the shown flags it has, for `agent doctor`."""
    have = [flag for flag in SHOWN_FLAGS if flag in flags]
    return f"{platform.machine() or 'unknown'}: {' '.join(have) if have else 'no flags read'}"
