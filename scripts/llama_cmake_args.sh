#!/usr/bin/env bash
# Prints the CMAKE_ARGS to build llama-cpp-python (the `local` extra) safely on this CPU, or
# nothing when llama.cpp's default build (-march=native) is safe.
#
# Why: on some VMs the CPU reports AMX to the compiler (cpuid) while the kernel has not
# enabled it (no `amx_tile` in /proc/cpuinfo). A -march=native build then uses AMX and the
# process dies at the first token. In that case the build is made portable
# (GGML_NATIVE=OFF) with exactly the instruction sets the kernel reports.
# Usage: CMAKE_ARGS="$(bash scripts/llama_cmake_args.sh)" pip install 'loopwise[local]'
set -euo pipefail
[ -r /proc/cpuinfo ] || exit 0
command -v gcc >/dev/null 2>&1 || exit 0
flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
native=$(gcc -march=native -Q --help=target 2>/dev/null || true)
enabled() { grep -Eq -- "^[[:space:]]*$1[[:space:]]+\[enabled\]" <<<"$native"; }
has() { [[ "$flags" == *" $1 "* ]]; }

mismatch=0
for pair in "-mamx-tile:amx_tile" "-mamx-int8:amx_int8" "-mamx-bf16:amx_bf16" \
            "-mavx512f:avx512f" "-mavx2:avx2"; do
  if enabled "${pair%%:*}" && ! has "${pair##*:}"; then mismatch=1; fi
done
[ "$mismatch" = 1 ] || exit 0

on() { if has "$2"; then echo -n " -D$1=ON"; else echo -n " -D$1=OFF"; fi; }
echo -n "-DGGML_NATIVE=OFF"
on GGML_AVX avx; on GGML_AVX2 avx2; on GGML_FMA fma; on GGML_F16C f16c
on GGML_AVX512 avx512f; on GGML_AVX512_VBMI avx512vbmi; on GGML_AVX512_VNNI avx512_vnni
on GGML_AVX512_BF16 avx512_bf16
on GGML_AMX_TILE amx_tile; on GGML_AMX_INT8 amx_int8; on GGML_AMX_BF16 amx_bf16
echo
