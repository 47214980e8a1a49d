"""What this CPU's matrix units can run: the one probe behind the default precision and `doctor`.

bf16 only pays on the CPU where it has bf16 dot-product units (AMX-BF16 on Intel Xeon since Sapphire
Rapids, AVX512-BF16 on Cooper Lake and AMD Zen 4 / 5) and oneDNN may use them: elsewhere oneDNN
emulates bf16 products in fp32 and a bf16 forward is several times slower than fp32
(docs/benchmarks.md). oneDNN's own cap, ONEDNN_MAX_CPU_ISA (older name DNNL_MAX_CPU_ISA), counts:
set to AVX2 it switches the units off for this process, so bf16 is then not chosen either.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

# /proc/cpuinfo flag -> the name users see (doctor, the log), by unit kind, best first.
BF16_UNITS = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512-BF16"}
INT8_UNITS = {"amx_int8": "AMX-INT8", "avx512_vnni": "AVX512-VNNI", "avx_vnni": "AVX-VNNI"}
VECTOR_UNITS = {"avx512f": "AVX-512", "avx2": "AVX2"}
ONEDNN_CAP_ENVS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
# oneDNN ISA caps that keep the bf16 units (its names: AVX512_CORE_BF16, AVX512_CORE_AMX, AVX10_1_512...).
_CAPS_WITH_BF16 = ("BF16", "AMX", "FP16", "AVX10")


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU as the runtime sees it: its name, /proc/cpuinfo flags (empty where there is no such
    file: then no units are assumed), torch's vector capability and oneDNN's ISA cap, if set."""

    name: str
    flags: frozenset[str]
    torch_capability: str
    onednn_cap: str | None = None

    def units(self, table: dict[str, str]) -> list[str]:
        return [label for flag, label in table.items() if flag in self.flags]

    @property
    def bf16_units(self) -> str | None:
        """The best bf16 matrix unit oneDNN may use here, or None."""
        cap = (self.onednn_cap or "ALL").upper()
        if cap not in ("ALL", "DEFAULT") and not any(part in cap for part in _CAPS_WITH_BF16):
            return None
        return next(iter(self.units(BF16_UNITS)), None)

    def summary(self) -> str:
        """One line for doctor and the log, e.g.
        'AMD EPYC: AVX-512, AVX512-BF16, AVX512-VNNI (torch: AVX512)'."""
        units = self.units(VECTOR_UNITS)[:1] + self.units(BF16_UNITS) + self.units(INT8_UNITS)
        cap = f", {ONEDNN_CAP_ENVS[0]}={self.onednn_cap}" if self.onednn_cap else ""
        listed = ", ".join(units) if units else "no AVX2 / AVX-512 / bf16 / int8 units found"
        return f"{self.name}: {listed} (torch: {self.torch_capability}{cap})"


def _cpuinfo(path: Path = Path("/proc/cpuinfo")) -> tuple[str, frozenset[str]]:
    """(model name, flags) of the first processor listed; ('', {}) where the file is absent (not Linux)."""
    try:
        text = path.read_text()
    except OSError:
        return "", frozenset()
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the first processor is enough: all cores of a machine have the same flags
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields.get("model name", ""), frozenset(fields.get("flags", "").split())


@functools.cache
def cpu_features() -> CpuFeatures:
    """This machine's CpuFeatures (read once)."""
    name, flags = _cpuinfo()
    cap = next((os.environ[env] for env in ONEDNN_CAP_ENVS if os.environ.get(env)), None)
    return CpuFeatures(
        name or platform.processor() or platform.machine(),
        flags,
        torch.backends.cpu.get_cpu_capability(),
        cap,
    )
