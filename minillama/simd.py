"""The one vector operation Numba cannot express: a lookup in a 16-entry table.

    lut16_fma(tmp, p, r0, x_hi, x_lo, lut)
        tmp[r0:r0+16] += lut[p[r0:r0+16] >> 4] * x_hi + lut[p[r0:r0+16] & 15] * x_lo

tmp is float32 (n,), p uint8 (n,) (both C-contiguous, r0 + 16 <= n), lut float32 (16,).
NF4's matvec (kernels_quant.py) is this, once per byte of weights: each byte holds two
4-bit codes, and the codes' values are not arithmetic in the code, so every value is a
table lookup. Written as `lut[p >> 4]` in Numba, LLVM does the lookups one at a time:
3.8 G weights/s on one thread (Zen 4). A vector CPU does 16 lookups in one instruction
(vpermps, a permute by a vector of indices), but LLVM's IR has no variable permute, so
this module emits the instruction itself, as a Numba intrinsic: 21-24 G weights/s.

`ISA` says which variant this CPU gets, read from the features LLVM targets (the host's,
or NUMBA_CPU_FEATURES if set):

    "avx512"   one vpermps zmm per 16 lookups (AVX-512F: Xeons since Skylake-SP, Zen 4)
    "avx2"     two vpermps ymm per 8 (one per half of the table) and a blend (Haswell on)
    None       a plain loop (other CPUs: ARM, or x86 without AVX2); the same result

All three give the same float32 values up to the order of the two products' sum (fastmath
contract may fuse a multiply-add). Numba's cache keys on the CPU and its features, so a
cached kernel is never loaded on a CPU it was not built for.
"""

from __future__ import annotations

import platform

import numba
from llvmlite import binding, ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

_F32, _I32 = ir.FloatType(), ir.IntType(32)
_FAST = ("fast",)


def _cpu_features() -> set[str]:
    text = numba.config.CPU_FEATURES or binding.get_host_cpu_features().flatten()
    return {f[1:] for f in text.split(",") if f.startswith("+")}


def _isa() -> str | None:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    if numba.config.CPU_NAME not in (None, "", "host") and not numba.config.CPU_FEATURES:
        return None  # a named CPU (e.g. "generic" for a portable cache): assume no vector permute
    feats = _cpu_features()
    return "avx512" if "avx512f" in feats else "avx2" if "avx2" in feats else None


ISA = _isa()


def _splat(builder, x, n):
    v = builder.insert_element(ir.Constant(ir.VectorType(_F32, n), ir.Undefined), x,
                               ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, n), [0] * n))


def _lookup_avx512(builder, lut, idx):
    """lut <16 x float>, idx <16 x i32> in 0..15 -> <16 x float>: one vpermps zmm."""
    v16 = ir.VectorType(_F32, 16)
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v16, [v16, idx.type]),
                                        "llvm.x86.avx512.permvar.sf.512")
    return builder.call(fn, [lut, idx])


def _lookup_avx2(builder, lut, idx):
    """As _lookup_avx512 with 8-wide permutes: each half of idx looks up in both halves of
    the table (vpermps reads the low 3 bits), and bit 3 picks one."""
    v8, i8 = ir.VectorType(_F32, 8), ir.VectorType(_I32, 8)
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8, [v8, i8]),
                                        "llvm.x86.avx2.permps")

    def half(v, k):
        return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, 8), list(range(k, k + 8))))

    low_table, high_table = half(lut, 0), half(lut, 8)
    halves = []
    for k in (0, 8):
        i = half(idx, k)
        high = builder.icmp_unsigned("!=", builder.and_(i, ir.Constant(i8, [8] * 8)),
                                     ir.Constant(i8, [0] * 8))
        halves.append(builder.select(high, builder.call(fn, [high_table, i]),
                                     builder.call(fn, [low_table, i])))
    return builder.shuffle_vector(halves[0], halves[1],
                                  ir.Constant(ir.VectorType(_I32, 16), list(range(16))))


def _lut16_fma_intrinsic(lookup):
    @intrinsic
    def lut16_fma(typingctx, tmp, p, r0, x_hi, x_lo, lut):
        ok = (isinstance(tmp, types.Array) and tmp.dtype == types.float32 and tmp.layout == "C"
              and isinstance(p, types.Array) and p.dtype == types.uint8 and p.layout == "C"
              and isinstance(lut, types.Array) and lut.dtype == types.float32
              and isinstance(r0, types.Integer))
        if not ok:
            return None
        sig = types.void(tmp, p, r0, types.float32, types.float32, lut)

        def codegen(context, builder, signature, args):
            tmp_a, p_a, r0_v, x_hi_v, x_lo_v, lut_a = args
            t = context.make_array(signature.args[0])(context, builder, tmp_a)
            q = context.make_array(signature.args[1])(context, builder, p_a)
            tab = context.make_array(signature.args[5])(context, builder, lut_a)
            v16, i16 = ir.VectorType(_F32, 16), ir.VectorType(_I32, 16)
            r0_v = builder.sext(r0_v, ir.IntType(64)) if r0_v.type.width < 64 else r0_v
            t_ptr = builder.bitcast(builder.gep(t.data, [r0_v]), v16.as_pointer())
            q_ptr = builder.bitcast(builder.gep(q.data, [r0_v]),
                                    ir.VectorType(ir.IntType(8), 16).as_pointer())
            lut_v = builder.load(builder.bitcast(tab.data, v16.as_pointer()), align=4)
            codes = builder.zext(builder.load(q_ptr, align=1), i16)
            hi = lookup(builder, lut_v, builder.lshr(codes, ir.Constant(i16, [4] * 16)))
            lo = lookup(builder, lut_v, builder.and_(codes, ir.Constant(i16, [15] * 16)))
            acc = builder.load(t_ptr, align=4)
            acc = builder.fadd(acc, builder.fmul(hi, _splat(builder, x_hi_v, 16), flags=_FAST), flags=_FAST)
            acc = builder.fadd(acc, builder.fmul(lo, _splat(builder, x_lo_v, 16), flags=_FAST), flags=_FAST)
            builder.store(acc, t_ptr, align=4)
            return context.get_dummy_value()
        return sig, codegen
    return lut16_fma


@njit(cache=True, boundscheck=False, nogil=True)
def lut16_fma_loop(tmp, p, r0, x_hi, x_lo, lut):
    """The plain-loop variant (any CPU)."""
    for r in range(r0, r0 + 16):
        c = p[r]
        tmp[r] += lut[c >> 4] * x_hi + lut[c & 15] * x_lo


VARIANTS = {"avx512": _lut16_fma_intrinsic(_lookup_avx512),
            "avx2": _lut16_fma_intrinsic(_lookup_avx2), None: lut16_fma_loop}
lut16_fma = VARIANTS[ISA]


def supported_variants() -> list[str | None]:
    """The variants this CPU can run: ISA and every narrower one."""
    order = ["avx512", "avx2", None]
    return order[order.index(ISA):]


def describe() -> str:
    return {"avx512": "AVX-512 (vpermps zmm)", "avx2": "AVX2 (vpermps ymm)",
            None: "plain loop (no vector permute)"}[ISA]


