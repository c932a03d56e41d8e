#!/bin/bash
# One command on a two-GPU machine: the training chain (.ckpt/full) on GPU 0 and a variant of the
# recipe (.ckpt/var) on GPU 1, side by side on the same shard for the same time, so that their
# held-out likelihoods compare at equal wall time (models/TRAINING.md, "Side by side").
#
#   bash models/gpu_pair.sh SHARD TIME_BUDGET [VARIANT ARGS FOR ITS FIRST RUN...]
#
# The variant starts from the chain's checkpoint with the extra arguments (for example
# --set crop_frames=4 --rescale-to 100000) and later resumes its own. $OUT receives the chain's
# checkpoint (Adam's moments too), the variant's weights, both logs and both sets of free-running
# samples (models/score_free_running.py scores them here): the 8 files, under the 64 MiB, that a
# command may return. The variant's Adam moments stay on the warm machine.
#
# A chain that starts from weights alone (a variant that won, or the compact copy) sets
# CHAIN_START=FILE: the chain resumes it with Adam's moments restarted and writes .ckpt/full.
set -u
shard=$1 budget=$2
shift 2
if [ -f .ckpt/full/weights.npz ]; then start=.ckpt/full; else start=${CHAIN_START:-}; fi
test -n "$start" && test -e "$start" || { echo "NO_CKPT: neither .ckpt/full nor CHAIN_START"; exit 3; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit
export PYTHONUNBUFFERED=1
common=(--shards "$shard" --time-budget "$budget" --eval-shard .traindata/heldout.flac --workers 16)
if [ -f .ckpt/var/weights.npz ]; then variant=(--resume .ckpt/var); else variant=(--resume "$start" "$@"); fi
CUDA_VISIBLE_DEVICES=0 python3 -m models.train --resume "$start" --out .ckpt/full "${common[@]}" \
    --free-running "$OUT/freerun.npz" >"$OUT/train.log" 2>&1 &
CUDA_VISIBLE_DEVICES=1 python3 -m models.train "${variant[@]}" --out .ckpt/var "${common[@]}" \
    --free-running "$OUT/var_freerun.npz" >"$OUT/var.log" 2>&1 &
wait
cp .ckpt/full/*.npz "$OUT/"
cp .ckpt/var/weights.npz "$OUT/var_weights.npz"
for log in train var; do
    echo "== $log"; grep -v "step [0-9]*[1-9]00/" "$OUT/$log.log" | cut -c1-400
done
