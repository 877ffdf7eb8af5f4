#!/bin/bash
# Run through the device tool on one NVIDIA H200 (16 CPU cores), from the repository root, with
# $DNNOD_DATA/PennFudanPed = a copy of ../shared/data/PennFudanPed whose PNGs were re-encoded as
# JPEG quality 92 (the tool carries at most 64 MiB). $OUT receives results.json, logs.tgz, models.
# These runs ran before commit 31b54e0 ("refine: crops grown to the image's aspect ratio"): test APs
# measured with the refinement before it (crops of the box's own shape, no IoU limit).
# A GPU run: a hyper-parameter sweep for shapes-tiny (the CPU command's budget: 1500 x 32),
# Penn-Fudan tiny (fc / conv x 2 seeds) and paper arch, test AP of each, and the benchmarks.
export PYTHONPATH=$PWD DNNOD_DATA=${DNNOD_DATA:-$PWD/gpu_data} PYTHONUNBUFFERED=1
nvidia-smi -L; python3 -c "import torch, torchvision; print(torch.__version__, torchvision.__version__, torch.cuda.get_device_name())"
mkdir -p runs logs
T="timeout ${TRAIN_T:-300}"
tr() { name=$1; shift; $T python3 -m dnnod.cli train --out runs/$name --no-progress --threads 1 "$@" > logs/$name.log 2>&1; echo "done $name rc=$?"; }
S="--data shapes --arch tiny --epochs 5 --steps-per-epoch 280 --batch-size 32 --lr-schedule cosine --seed 0 --val-images 16 --workers 2"
P="--data pennfudan --epochs 5 --steps-per-epoch ${PF_SPE:-400} --batch-size 32 --lr-schedule cosine --max-side 400 --workers 2"
tr s_fc_adam $S --optimizer adam --lr 1e-3 &
tr s_conv_adam $S --optimizer adam --lr 1e-3 --head conv &
tr s_fc_adagrad $S --optimizer adagrad --lr 0.01 &
tr s_conv_adam3 $S --optimizer adam --lr 3e-3 --head conv &
tr p_fc_s0 $P --arch tiny --optimizer adam --lr 1e-3 --seed 0 &
tr p_fc_s1 $P --arch tiny --optimizer adam --lr 1e-3 --seed 1 &
tr p_conv_s0 $P --arch tiny --optimizer adam --lr 1e-3 --head conv --seed 0 &
tr p_conv_s1 $P --arch tiny --optimizer adam --lr 1e-3 --head conv --seed 1 &
tr p_paper_s0 $P --arch paper --optimizer adam --lr 1e-4 --seed 0 --workers 3 &
wait
for r in runs/s_*; do timeout 120 python3 bench/gpu_evalrun.py $r shapes & done
for r in runs/p_*; do timeout 120 python3 bench/gpu_evalrun.py $r pennfudan --norefine & done
wait
( timeout 60 python3 bench/detect.py; timeout 40 python3 bench/localize.py ) > $OUT/bench.txt 2>&1
python3 - <<'PY'
import json, glob, os
res = [json.load(open(f)) for f in sorted(glob.glob("runs/*/eval.json"))]
json.dump(res, open(os.environ["OUT"] + "/results.json", "w"), indent=1)
PY
tar czf $OUT/logs.tgz logs runs/*/metrics_*.csv runs/*/eval.json 2>/dev/null
for r in p_fc_s0 p_fc_s1 p_conv_s0 p_conv_s1; do f=runs/$r/model.pt; [ -f $f ] || f=runs/$r/last.pt; cp $f $OUT/$r.pt; done
ls -la $OUT; tail -n 3 logs/*.log
