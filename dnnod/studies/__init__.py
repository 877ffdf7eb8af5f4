"""The commands that produce the book's measurements (``dnnod/studies/results/*.json``): ablations and the
paper's Table 1 set-up (:mod:`~dnnod.studies.experiments`), the race of DetectorNet and Faster R-CNN at
equal training budgets (:mod:`~dnnod.studies.race`, which also runs the pedestrian network's recipe
trials), the other comparisons of chapter 10 (:mod:`~dnnod.studies.baselines`) and the perfect-mask
ceiling of box extraction on real photos (:mod:`~dnnod.studies.ceiling`). Run as ``python -m dnnod.studies.experiments`` /
``python -m dnnod.studies.race`` / ``python -m dnnod.studies.baselines``; each JSON records its
command, seed, time and hardware."""
