#!/usr/bin/env bash
# The GPU check, one script of under 8 minutes on one GPU:
#   1. the CUDA-marked tests (trainer, augmentation and probes on cuda against the CPU);
#   2. the throughput benchmark on cuda: CIFAR ResNet-18 on CIFAR-shaped synthetic images
#      (or CIFAR-10 when CIFAR_ROOT is set) and the small CNN on Fashion-MNIST;
#   3. the book profile of chapter 2 (all its MoCo runs, probes and verdicts), timed end to end
#      with `python -m negatives.chapters.difficulty` (the notebook's computations, no Jupyter);
#   4. one MoCo v2 run through torchrun and DistributedDataParallel on every GPU (NCCL; gloo
#      on the CPU with --smoke), into the run cache, and its re-run found in the cache.
# Everything it measures goes to $OUT (the device tool's folder) or benchmarks/results/.
#
# The device machine has torch but no network: run from the repository root with
#   PYTHON=python3 (default) and the Fashion-MNIST files carried, e.g. here
#     mkdir -p .gpu-data && cp -r data/FashionMNIST .gpu-data/ && echo /.gpu-data/ >> .git/info/exclude
#   and there (carry: [".gpu-data"])
#     NEGATIVES_DATA=.gpu-data bash benchmarks/gpu_check.sh
#
# usage: bash benchmarks/gpu_check.sh [--smoke]
#   --smoke: the same steps on the CPU at toy sizes (digits), to check the script itself.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=0
for arg in "$@"; do
  case "$arg" in
    --smoke) smoke=1 ;;
    -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $arg (allowed: --smoke)" >&2; exit 2 ;;
  esac
done

py=${PYTHON:-python3}
out=${OUT:-benchmarks/results}
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
results=$(mktemp -d -t negatives-gpu-check.XXXXXX)
trap 'rm -rf "$results"' EXIT
step() { echo; echo "==> $* ($(date -u +%H:%M:%S))"; }
t_start=$(date +%s)

if [ "$smoke" = 1 ]; then
  device=cpu
  bench=(--dataset digits --width 8 --batch-size 32 --steps 1 --warmup 1 --repeats 1 --workers 0)
  resnet=(--arch resnet18-cifar --synthetic --batch-size 8 --steps 1 --warmup 1 --repeats 1 --workers 0)
  chapter=(--profile smoke -p seeds 1 -p extra_seeds 0)
else
  device=cuda
  "$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no GPU visible to torch")'
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  bench=(--repeats 2 --workers 0,8)
  resnet=(--arch resnet18-cifar --repeats 2 --workers 0,8)
  if [ -n "${CIFAR_ROOT:-}" ]; then
    resnet+=(--dataset cifar10 --data-root "$CIFAR_ROOT")
  else
    resnet+=(--synthetic)
  fi
  chapter=(--profile book)
fi
"$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'

step "1/4 CUDA-marked tests"
"$py" -m pytest -q -m cuda -p no:cacheprovider tests 2>&1 | tee "$out/gpu-check-tests.txt"

step "2/4 throughput on $device"
"$py" benchmarks/throughput.py --device "$device" "${resnet[@]}" \
  --json "$out/gpu-throughput-resnet18.json" | tee "$out/gpu-throughput.txt"
"$py" benchmarks/throughput.py --device "$device" "${bench[@]}" \
  --json "$out/gpu-throughput-cnn-small.json" | tee -a "$out/gpu-throughput.txt"

step "3/4 chapter 2, profile ${chapter[1]}, from an empty run cache"
t0=$(date +%s)
"$py" -m negatives.chapters.difficulty "${chapter[@]}" -p device "$device" \
  -p results_dir "$results" --json "$out/gpu-difficulty.json" | tee "$out/gpu-difficulty.txt"
echo "chapter 2 took $(( $(date +%s) - t0 )) s end to end" | tee -a "$out/gpu-difficulty.txt"

step "4/4 one run across every GPU with torchrun (DDP)"
if [ "$device" = cuda ]; then
  ranks=$("$py" -c 'import torch; print(torch.cuda.device_count())')
else
  ranks=2
fi
cat > "$results/ddp-run.json" <<JSON
{"config": {"method": "moco", "epochs": 2, "batch_size": 128, "bn_groups": $(( ranks > 1 ? ranks : 2 )),
            "queue_size": 1024, "width": 16, "device": "$device", "precision": "fp32"},
 "data": {"name": "digits"}}
JSON
t0=$(date +%s)
for attempt in train cached; do
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$py" -m torch.distributed.run --standalone \
    --nproc-per-node "$ranks" -m negatives.train --config "$results/ddp-run.json" \
    --results "$results" 2>&1 | tee -a "$out/gpu-ddp.txt"
done
echo "DDP on $ranks processes ($device): $(( $(date +%s) - t0 )) s for the run and its re-run" \
  | tee -a "$out/gpu-ddp.txt"

echo
echo "gpu_check: done in $(( $(date +%s) - t_start )) s; results in $out/"
