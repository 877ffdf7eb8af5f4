#!/bin/bash
# Run through the device tool on one NVIDIA H200 (16 CPU cores), from the repository root, with
# $DNNOD_DATA/PennFudanPed = a copy of ../shared/data/PennFudanPed whose PNGs were re-encoded as
# JPEG quality 92 (the tool carries at most 64 MiB). $OUT receives results.json, logs.tgz, models.
# GPU runs for the book (2026-11-26): shapes-tiny recipes at the CPU command's budget (1400 x 32), Penn-Fudan tiny conv
# x 3 seeds, paper arch (conv and fc head), test AP of each with the current dnnod.detect.
export PYTHONPATH=$PWD DNNOD_DATA=${DNNOD_DATA:-$PWD/gpu_data} PYTHONUNBUFFERED=1
nvidia-smi -L
mkdir -p runs logs
T="timeout ${TRAIN_T:-270}"
tr() { name=$1; shift; $T python3 -m dnnod.cli train --out runs/$name --no-progress --threads 1 "$@" > logs/$name.log 2>&1; echo "done $name rc=$?"; }
S="--data shapes --arch tiny --head conv --batch-size 32 --lr-schedule cosine --seed 0 --val-images 16 --workers 2 --optimizer adam"
P="--data pennfudan --epochs 5 --steps-per-epoch 600 --batch-size 32 --lr-schedule cosine --max-side 400 --workers 2 --optimizer adam --head conv"
tr s_base $S --epochs 5 --steps-per-epoch 280 --lr 1e-3 &
tr s_sig $S --epochs 5 --steps-per-epoch 280 --lr 1e-3 --activation sigmoid &
tr s_lr5 $S --epochs 5 --steps-per-epoch 280 --lr 5e-4 &
tr s_b16 $S --epochs 5 --steps-per-epoch 560 --lr 1e-3 --batch-size 16 &
tr s_lam03 $S --epochs 5 --steps-per-epoch 280 --lr 1e-3 --lam 0.3 &
tr s_ms25 $S --epochs 5 --steps-per-epoch 280 --lr 1e-3 --min-scale 0.25 &
tr s_long $S --epochs 5 --steps-per-epoch 600 --lr 1e-3 &
tr p_conv_s0 $P --arch tiny --lr 1e-3 --seed 0 &
tr p_conv_s1 $P --arch tiny --lr 1e-3 --seed 1 &
tr p_conv_s2 $P --arch tiny --lr 1e-3 --seed 2 &
tr p_paperconv_s0 $P --arch paper --lr 1e-4 --seed 0 --workers 3 &
tr p_paperfc_s0 $P --arch paper --head fc --lr 1e-4 --seed 0 --workers 3 &
wait
for r in runs/s_*; do timeout 110 python3 bench/gpu_evalrun.py $r shapes & done
for r in runs/p_*; do timeout 110 python3 bench/gpu_evalrun.py $r pennfudan --norefine & done
wait
python3 - <<'PY'
import json, glob, os
res = [json.load(open(f)) for f in sorted(glob.glob("runs/*/eval.json"))]
json.dump(res, open(os.environ["OUT"] + "/results.json", "w"), indent=1)
PY
tar czf $OUT/logs.tgz logs runs/*/metrics_*.csv runs/*/eval.json 2>/dev/null
for r in p_conv_s0 p_conv_s1 p_conv_s2; do f=runs/$r/model.pt; [ -f $f ] || f=runs/$r/last.pt; cp $f $OUT/$r.pt; done
ls -la $OUT; tail -n 2 logs/*.log
