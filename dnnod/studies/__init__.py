"""The commands that produce the book's measurements (``dnnod/studies/results/*.json``): ablations and the
paper's Table 1 set-up (:mod:`~dnnod.studies.experiments`), and the comparisons with other
detectors (:mod:`~dnnod.studies.baselines`). Run as ``python -m dnnod.studies.experiments`` /
``python -m dnnod.studies.baselines``; each JSON records its command, seed, time and hardware."""
