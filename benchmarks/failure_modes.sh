#!/usr/bin/env bash
# The runs behind notebook 08: M2 with the thesis's settings (α = 50, β = 1, learning rate 10⁻³),
# M = 100 fixed labels, MNIST-10k, 20 epochs, seeds 0, 1, 2; one grid per experiment, each setting a
# command. Resumable: a run already in the results folder is not trained again.
#   bash benchmarks/failure_modes.sh [RESULTS]        (default RESULTS: figures/failure-modes)
set -euo pipefail
OUT=${1:-figures/failure-modes}
PY=${PYTHON:-python}
sweep() { "$PY" -m ssvae_lib sweep --spec benchmarks/grids/failure-modes.json --out "$OUT" "$@"; }
# 1. likelihood weighting: a Gaussian decoder with fixed σ, 1/σ² weighs the reconstruction
for sigma in 0.05 0.1 0.2 0.4 0.8 1.0 1.6; do
  sweep --name failure-sigma --set observation=gaussian --set sigma=$sigma
done
# 2. pretraining: 10 epochs as an unsupervised VAE, then the labels; small and the thesis's α
sweep --name failure-pretrain --alphas 0.1,50
sweep --name failure-pretrain --alphas 0.1,50 --set pretrain_epochs=10
# 3. the labelled / unlabelled batch ratio (128 unlabelled images per step): γ fixed at 1, or set so
#    that γ·B_l, the labelled images' weight, stays that of B_l = 64
for size in 16 64 100; do
  sweep --name failure-ratio --set labelled_batch_size=$size
done
sweep --name failure-ratio --set labelled_batch_size=16 --set gamma=4
sweep --name failure-ratio --set labelled_batch_size=100 --set gamma=0.64
# 4. β fixed at 1 or 8, or learned (L-VAE)
sweep --name failure-beta
sweep --name failure-beta --set beta=8
sweep --name failure-beta --set learn_beta=true
