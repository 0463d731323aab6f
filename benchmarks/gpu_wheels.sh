#!/usr/bin/env bash
# Gather, here (with network), what benchmarks/gpu_check.sh needs on a GPU machine without one: wheels of descend's
# dependencies that the GPU image lacks, for its Python, and the Fashion-MNIST files. Everything goes into .gpu/
# (ignored by git), which the device tool carries:
#
#   bash benchmarks/gpu_wheels.sh [--dry-run]      # here: .gpu/wheels/*.whl, .gpu/fashion-mnist/*.gz (~50 MB)
#   then on the GPU machine (device tool: carry=[".gpu"]):  bash benchmarks/gpu_check.sh
#
# The versions are those this checkout's virtual environment runs (so the GPU run tests what the CPU suite tests);
# the wheels are for the GPU image's Python (TARGET_PYTHON, default 3.12: /work/.library/device/KINDS.md lists
# Python 3.12 with torch 2.11 + CUDA 13 and the packages it holds). torch, numpy, scipy, scikit-learn, matplotlib,
# tensorboard, rich, safetensors, pytest and hypothesis are in that image and are not carried; gpu_check.sh installs
# a carried wheel only when its package is missing there.
set -euo pipefail
cd "$(dirname "$0")/.."

DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; fi
BUNDLE=${GPU_BUNDLE:-.gpu}
PYTHON=${PYTHON:-.venv/bin/python}
TARGET_PYTHON=${TARGET_PYTHON:-3.12}
FASHION=${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
# descend's requirements (and theirs) that the GPU image lacks; every requirement in pyproject.toml is in one of
# these two lists (tests/test_benchmarks_gpu.py checks it)
PACKAGES=(pydantic pydantic-core annotated-types typing-inspection tomli-w mnist1d optuna alembic sqlalchemy
          greenlet mako colorlog psycopg psycopg-binary pytest-timeout)
IN_IMAGE=(torch numpy rich safetensors tensorboard scikit-learn matplotlib pytest hypothesis)

pins=()
for name in "${PACKAGES[@]}"; do
    version=$("$PYTHON" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name") || {
        echo "gpu_wheels: $name is not installed in $PYTHON's environment (make install first)" >&2
        exit 2
    }
    pins+=("$name==$version")
done

platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$tag")
done
download=("$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$TARGET_PYTHON"
          --implementation cp "${platforms[@]}" -d "$BUNDLE/wheels" "${pins[@]}")
fashion=(cp "$FASHION/train-images-idx3-ubyte.gz" "$FASHION/train-labels-idx1-ubyte.gz"
         "$FASHION/t10k-images-idx3-ubyte.gz" "$FASHION/t10k-labels-idx1-ubyte.gz" "$BUNDLE/fashion-mnist/")

if [[ $DRY == 1 ]]; then
    echo "would run: mkdir -p $BUNDLE/wheels $BUNDLE/fashion-mnist"
    echo "would run: ${download[*]}"
    echo "would run: ${fashion[*]}"
    exit 0
fi
mkdir -p "$BUNDLE/wheels" "$BUNDLE/fashion-mnist"
rm -f "$BUNDLE"/wheels/*.whl  # one version of each: two would stop the install there
"${download[@]}"
"${fashion[@]}"
echo "gpu_wheels: $(ls "$BUNDLE"/wheels/*.whl | wc -l) wheels and the Fashion-MNIST files in $BUNDLE ($(du -sh "$BUNDLE" | cut -f1))"
