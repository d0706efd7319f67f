#!/usr/bin/env bash
# bench/gpu.py on a GPU machine without internet access (see its docstring for what it measures).
#
#   bash bench/gpu.sh [gpu.py options]       # e.g. --sections precision,fid; --device cpu --tiny (a check)
#
# Needs, beside the repo: .whl/ (the wheels of what genlab imports and the machine lacks: hydra-core,
# omegaconf, antlr4-python3-runtime 4.9.3, torch-fidelity; installed --no-deps into /tmp/site, so the
# machine's own torch, torchvision and Lightning are used) and .gpu_data/data/tinyshakespeare/input.txt.
# Writes $OUT/gpu.json (rewritten after every row) and $OUT/gpu.log; OUT defaults to /tmp/gpu_out.
set -o pipefail
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
export PYTHONPATH=/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}
[ -d .gpu_data ] && export GENLAB_SHARED=$PWD/.gpu_data
export GENLAB_CACHE=${GENLAB_CACHE:-/tmp/genlab_cache} WANDB_MODE=offline PYTHONUNBUFFERED=1
{
    nvidia-smi -L 2>&1
    python3 -c "
import sys, torch, torchvision, pytorch_lightning, torchmetrics, hydra, omegaconf, torch_fidelity
print('python', sys.version.split()[0], '| torch', torch.__version__, 'cuda', torch.version.cuda,
      '| torchvision', torchvision.__version__, '| pytorch_lightning', pytorch_lightning.__version__,
      '| torchmetrics', torchmetrics.__version__, '| hydra', hydra.__version__, '| omegaconf', omegaconf.__version__,
      '| torch_fidelity', torch_fidelity.__version__, '| torch from', torch.__file__)"
} 2>&1 | tee "$OUT/gpu.log"
python3 bench/gpu.py --out "$OUT/gpu.json" "$@" 2>&1 | tee -a "$OUT/gpu.log"
