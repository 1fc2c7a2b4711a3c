#!/usr/bin/env bash
# Full-size chain timings on one CUDA GPU: ffhq_4_scales_geometric and cin_5_scales_custom (random weights),
# batch 1 and 32, bf16 and fp32 transformers (VQGAN and sampling math always fp32), eager token steps against
# compiled static-shape steps (torch.compile mode reduce-overhead: CUDA graphs), peak allocated memory.
# Writes JSON to $OUT (or ./bench-gpu). Needs only torch with CUDA and this repository; installs nothing.
# Usage: bash scripts/gpu_bench.sh            (not yet run: no GPU was available; compilation is part of the warm-up)
set -euo pipefail
out="${OUT:-bench-gpu}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.txt" || true
for model in ffhq_4_scales_geometric cin_5_scales_custom; do
  python -m tools.bench --model "$model" --device cuda --dtype bf16 fp32 --batch 1 32 --step-mode eager compiled \
    --repeats 2 --warmup 1 --json "$out/$model.json" 2>&1 | tee "$out/$model.txt"
done
