"""Where a benchmark ran: the CPU, the vector width the kernels were compiled for, threads, load.

Machines of the same kind differ (Intel Xeons with AMX, AMD EPYC Zen 4 / Zen 5), so every
benchmark prints this before its table, and a figure is only ever compared with figures
printed under the same header.
"""

from __future__ import annotations

import os
import platform
import re
from importlib import metadata

# environment variables that change how the kernels compile or how threads behave
ENV_KEYS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY",
            "NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES")
# the CPU features worth naming, widest first; the rest of the list is noise for this purpose
ISA_FEATURES = ("amx-tile", "amx-bf16", "amx-int8", "avx512f", "avx512bw", "avx512vl", "avx512vnni",
                "avx512bf16", "avx512fp16", "avxvnni", "avx2", "fma", "avx", "sse4.2", "sse2",
                "sve", "neon")
VERSIONS = ("numpy", "numba", "llvmlite", "torch")


def _cpuinfo() -> tuple[str, str, str]:
    """(model name, vendor, "family F model M stepping S") from /proc/cpuinfo (the first CPU),
    falling back to platform.processor(). Some machines name only "AMD EPYC": family and model
    tell the generation apart (family 25 is Zen 3 / Zen 4, 26 is Zen 5)."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    model = fields.get("model name") or platform.processor() or platform.machine()
    ids = " ".join(f"{k} {fields[k]}" for k in ("cpu family", "model", "stepping") if k in fields)
    return model, fields.get("vendor_id", "unknown"), ids


def vector_isa(features: set[str]) -> tuple[str, int]:
    """The widest vector ISA in a set of LLVM feature names and its width in bits."""
    for feature, name, bits in (("avx512f", "AVX-512", 512), ("avx2", "AVX2", 256), ("avx", "AVX", 256),
                                ("sse2", "SSE2", 128), ("sve", "SVE", 128), ("neon", "NEON", 128)):
        if feature in features:  # SVE's width is the hardware's choice: 128 bits at least
            return name, bits
    return "scalar", 0


def compiled_vector_bits() -> int | None:
    """Widest vector register in the code Numba compiles here for a float32 dot product with
    the kernels' fastmath flags: LLVM may keep 256-bit vectors on an AVX-512 CPU (some
    Intel tunings prefer them), and NUMBA_CPU_NAME can ask for another target. None under
    NUMBA_DISABLE_JIT=1, where nothing is compiled."""
    import numpy as np
    from numba import config, njit

    from minillama.kernels import FASTMATH

    @njit(fastmath=FASTMATH, cache=False)
    def dot(a, b):
        acc = np.float32(0.0)
        for i in range(a.shape[0]):
            acc += a[i] * b[i]
        return acc

    if config.DISABLE_JIT:
        return None
    a = np.ones(64, np.float32)
    dot(a, a)
    asm = "\n".join(dot.inspect_asm().values())
    for register, bits in (("zmm", 512), ("ymm", 256), ("xmm", 128), ("v", 128)):
        if re.search(rf"\b%?{register}\d+\b", asm):
            return bits
    return 0


def machine_info(probe: bool = True) -> dict:
    """Machine facts as a JSON-ready dict: CPU, LLVM target, vector ISA, threads, load, env.
    probe=False skips compiling the probe that reads the vector width from real code."""
    import llvmlite
    import llvmlite.binding as llvm

    model, vendor, family = _cpuinfo()
    features = {k for k, on in llvm.get_host_cpu_features().items() if on}
    isa, bits = vector_isa(features)
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    versions = {"python": platform.python_version(), "llvmlite": llvmlite.__version__}
    for name in VERSIONS:
        try:
            versions.setdefault(name, metadata.version(name))
        except metadata.PackageNotFoundError:
            versions[name] = None
    return dict(cpu_model=model, cpu_vendor=vendor, cpu_family=family, llvm_cpu=llvm.get_host_cpu_name(),
                isa=isa, isa_bits=bits, isa_features=[f for f in ISA_FEATURES if f in features],
                compiled_vector_bits=compiled_vector_bits() if probe else None,
                cpu_count=os.cpu_count(), usable_cpus=usable, load_average=list(os.getloadavg()),
                env={k: os.environ.get(k) for k in ENV_KEYS}, versions=versions)


def describe(info: dict) -> str:
    """The lines printed before a benchmark's table."""
    env = " ".join(f"{k}={v}" for k, v in info["env"].items() if v is not None)
    unset = " ".join(k for k, v in info["env"].items() if v is None)
    compiled = info.get("compiled_vector_bits")
    lines = [
        f"CPU: {info['cpu_model']} ({info['cpu_vendor']}, {info['cpu_family']}); "
        f"LLVM target {info['llvm_cpu']}; widest vector ISA {info['isa']} ({info['isa_bits']}-bit)"
        + (f"; Numba code uses {compiled}-bit vectors" if compiled else ""),
        f"  features: {' '.join(info['isa_features']) or 'none of note'}",
        f"  os.cpu_count() {info['cpu_count']} ({info['usable_cpus']} usable); "
        f"set: {env or 'nothing'}; unset: {unset or 'nothing'}",
        "  " + " ".join(f"{k} {v}" for k, v in info["versions"].items() if v),
    ]
    return "\n".join(lines)
