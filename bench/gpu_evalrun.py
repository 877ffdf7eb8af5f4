"""Evaluate the runs of gpu_data/run.sh: test AP with dnnod.evaluate (detect defaults)."""
import json, sys, time, os
from pathlib import Path
import torch
torch.set_num_threads(1)
from dnnod.checkpoint import load_checkpoint
from dnnod.data import make_dataset
from dnnod.assess import evaluate_model
run = Path(sys.argv[1]); data = sys.argv[2]
f = run / "model.pt"
partial = not f.is_file()
if partial:
    f = run / "last.pt"
m = load_checkpoint(f, device="cuda")
kw = {"num_images": 100, "image_size": 192, "seed": 0} if data == "shapes" else {}
ds = make_dataset(data, "test", None, **kw)
t = time.time()
r = evaluate_model(m, ds, device="cuda", progress=False)
r2 = evaluate_model(m, ds, device="cuda", progress=False, refine=False) if "--norefine" in sys.argv else None
out = {"run": run.name, "file": f.name, "partial": partial, "map": r["map"],
       "ap": {str(k): v for k, v in r["ap"].items()}, "s_per_img": r["seconds_per_image"],
       "map_norefine": r2["map"] if r2 else None,
       "steps": m.meta.get("step"), "wall_s": m.meta.get("wall_time_s"), "hardware": m.meta.get("hardware"),
       "epochs": m.meta.get("log_epochs")}
print(json.dumps({k: v for k, v in out.items() if k != "epochs"}))
(run / "eval.json").write_text(json.dumps(out))
