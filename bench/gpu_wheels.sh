#!/bin/sh
# What the GPU machine needs beside the repo's tree for bench/gpu_check.py (bench/README.md): the wheels of
# mimicnet's dependencies its image lacks, in .whl/, and the CIFAR-10 subset, in .data/ (both git-ignored,
# both named in the device call's `carry`). Run it in the checkout the device call is made from.
#
#   sh bench/gpu_wheels.sh                 # Python 3.12, the GPU image's
#   PYVER=3.11 WHL=/tmp/whl311 sh bench/gpu_wheels.sh   # the same set for a local dry run on 3.11
#
# The image ('cuda', package list of 2026-11-17 in the device's KINDS.md) has torch, numpy, safetensors, tqdm,
# scipy, matplotlib, jinja2 (+ markupsafe), pyyaml, packaging, typing-extensions, pytest and hypothesis. It
# lacks optuna and greenlet (pyproject's), and what optuna needs beyond the image: alembic, colorlog,
# sqlalchemy, mako. Versions: those CI resolves (pip freeze of `pip install -e '.[test]'`, 2026-12-07); one
# version of each, since `pip install --no-deps` of two stops the whole install there.
set -eu
cd "$(dirname "$0")/.."
PYVER=${PYVER:-3.12}
WHL=${WHL:-.whl}
DATA=${DATA:-../shared/data/cifar-10-subset-python.tar.gz}
SHA=b6c854548cc264907bf7f2400b28074f0a3bf7e417eb06810b02bbaeb851d26a   # /work/shared/data/README.md
PKGS="optuna==5.1.0 alembic==1.20.1 colorlog==6.12.0 SQLAlchemy==2.1.9 Mako==1.4.3 greenlet==3.5.6"

rm -rf "$WHL"
mkdir -p "$WHL"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d "$WHL" $PKGS
n=$(ls "$WHL"/*.whl | wc -l)
[ "$n" -eq 6 ] || { echo "gpu_wheels: expected 6 wheels in $WHL, got $n" >&2; exit 1; }

mkdir -p .data
install -m 644 "$DATA" .data/cifar-10-subset-python.tar.gz
echo "$SHA  .data/cifar-10-subset-python.tar.gz" | sha256sum -c --quiet - \
    || { echo "gpu_wheels: $DATA is not the CIFAR-10 subset (sha256 differs)" >&2; exit 1; }
ls -l "$WHL" .data
du -sh "$WHL" .data
