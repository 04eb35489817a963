#!/usr/bin/env bash
# Prints the CMAKE_ARGS to build llama-cpp-python (the `local` extra) safely on this CPU, or
# nothing when llama.cpp's default build (-march=native) is safe.
#
# Why: a -march=native build uses llama.cpp's AMX kernels whenever the compiler sees AMX,
# and on the VMs here they killed the process at the first token (SIGSEGV at `ldtilecfg` in
# ggml_backend_amx_mul_mat) twice: once where the kernel had not enabled AMX (no `amx_tile`
# in /proc/cpuinfo), and once where it had (a plain C probe of ldtilecfg ran fine there).
# So whenever the compiler would use AMX, or sees an instruction set the kernel does not
# report, the build is made portable (GGML_NATIVE=OFF) with the instruction sets the kernel
# reports and AMX off. AMX only speeds up int8/bf16 matrix products of large models.
# Usage: CMAKE_ARGS="$(bash scripts/llama_cmake_args.sh)" pip install 'loopwise[local]'
set -euo pipefail
[ -r /proc/cpuinfo ] || exit 0
command -v gcc >/dev/null 2>&1 || exit 0
flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
native=$(gcc -march=native -Q --help=target 2>/dev/null || true)
enabled() { grep -Eq -- "^[[:space:]]*$1[[:space:]]+\[enabled\]" <<<"$native"; }
has() { [[ "$flags" == *" $1 "* ]]; }

mismatch=0
for pair in "-mavx512f:avx512f" "-mavx2:avx2"; do
  if enabled "${pair%%:*}" && ! has "${pair##*:}"; then mismatch=1; fi
done
for amx in -mamx-tile -mamx-int8 -mamx-bf16; do
  if enabled "$amx"; then mismatch=1; fi
done
[ "$mismatch" = 1 ] || exit 0

on() { if has "$2"; then echo -n " -D$1=ON"; else echo -n " -D$1=OFF"; fi; }
echo -n "-DGGML_NATIVE=OFF"
on GGML_AVX avx; on GGML_AVX2 avx2; on GGML_FMA fma; on GGML_F16C f16c
on GGML_AVX512 avx512f; on GGML_AVX512_VBMI avx512vbmi; on GGML_AVX512_VNNI avx512_vnni
on GGML_AVX512_BF16 avx512_bf16
echo -n " -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
echo
