"""Where every stored number of the book comes from: the tables of the appendix "Reproducing every
number", generated from the records themselves (``dnnod/studies/results/*.json``, ``dnnod/weights/eval.json``
and the shipped checkpoints' ``meta``), never typed by hand.

    from dnnod.viz.records import chapter_rows, markdown_table
    markdown_table(chapter_rows(9))      # a MyST/Markdown table for chapter 9

Each row is one number: what it is, its value, the command that makes it, the seed, the time the
command took, the hardware it ran on, and the record that holds it (file, and where the
repository's git history is at hand, the commit and date that last wrote that file). A run is
identified by its date, commit and command only.
"""
from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = ("number", "value", "command", "seed", "time", "hardware", "record")

#: The sections of ``dnnod/weights/README.md`` that hold the runs behind a chapter's text
#: (seed-by-seed tables, recipes tried and not shipped). Checked against the README's headings.
README_SECTIONS: Dict[int, List[str]] = {
    5: ["Commands", "Longer training (this file)", "Measured AP"],
    6: ["Tried, not shipped: the paper's pruning classifier (Sec. 5.2, filter 2)."],
    8: ["The final NMS (`dnnod.detect.FINAL_NMS_IOU`, ours)."],
    9: ["Measured AP"],
    10: ["The head's batch normalisation (the previous file)",
         "The previous file's recipe, 3000 steps",
         "Tried, not shipped: the shapes recipe's sampler and loss on Penn-Fudan",
         "The paper's architecture (GPU only)"],
}

#: Chapters whose numbers are all computed by their own cells when the chapter runs.
LIVE = {1: "01_introduction", 2: "02_detection", 3: "03_masks", 4: "04_network", 6: "06_boxes"}


@functools.lru_cache(maxsize=None)
def git_stamp(path: str) -> str:
    """``"<commit> (<date>)"`` of the last commit that wrote ``path`` (relative to the repository
    root; a commit that only moved the file does not count), or ``""`` where there is no git
    history (an installed package, Colab)."""
    if not (ROOT / ".git").exists():
        return ""
    try:
        out = subprocess.run(["git", "log", "--follow", "--format=@%h (%cs)", "--name-status", "--", path],
                             cwd=ROOT, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return ""
    if out.returncode != 0:
        return ""
    for entry in out.stdout.split("@")[1:]:
        lines = [x for x in entry.splitlines() if x.strip()]
        if lines and not any(x.startswith("R100") for x in lines[1:]):
            return lines[0].strip()
    return ""


def _record(path: str) -> str:
    stamp = git_stamp(path)
    return f"`{path}`" + (f", {stamp}" if stamp else "")


def _data(name: str) -> dict:
    from dnnod.viz.explore import load_book_data
    return load_book_data(name)


def _minutes(seconds: Optional[float]) -> str:
    if seconds is None:
        return "–"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _threads(n) -> str:
    return f"CPU, {n} torch thread{'s' if n != 1 else ''}" if n else "CPU"


def _row(number, value, command, seed="–", time="–", hardware="–", record="–") -> dict:
    return dict(zip(COLUMNS, (number, value, command, seed, time, hardware, record)))


def weights_rows(names=("shapes-tiny", "pennfudan-tiny")) -> List[dict]:
    """The shipped networks: how each was trained and its test AP (``eval.json``)."""
    import json

    from dnnod.checkpoint import WEIGHTS_DIR, load_pretrained
    ev = json.loads((WEIGHTS_DIR / "eval.json").read_text())
    rows = []
    for n in names:
        meta = load_pretrained(n, device="cpu").meta
        t = ev[n]["test"]
        rows.append(_row(f"`{n}`: training ({meta['step']} steps)", "the weights",
                         f"`{meta['command']}`", meta.get("seed", "–"), _minutes(meta.get("wall_time_s")),
                         meta.get("hardware", "–"), _record(f"dnnod/weights/{n}.pt")))
        rows.append(_row(f"`{n}`: test mAP@0.5 (VOC07), {t['images']} images", f"{t['map']:.3f}",
                         f"`python dnnod/weights/measure.py {n} dnnod/weights/{n}.pt --data {ev[n]['data']}`",
                         "–", f"{t.get('seconds_per_image', 0):.2f} s per image", "CPU",
                         _record("dnnod/weights/eval.json")))
    return rows


def _experiment_rows(fname: str, values) -> List[dict]:
    """Rows of a ``python -m dnnod.studies.experiments`` file; ``values(name, d)`` yields (number, value)
    per dataset entry. Entries kept from an earlier run get that run's command."""
    d = _data(fname)
    kept = d.get("kept_from_earlier_run") or {}
    rows = []
    for name, entry in d["datasets"].items():
        if name in kept.get("datasets", []):
            cmd, wall = kept["command"], kept.get("wall_time_s")
        else:
            cmd, wall = d["command"], d.get("all_wall_time_s", d.get("wall_time_s"))
        for number, value in values(name, entry):
            rows.append(_row(number, value, f"`{cmd}`", "– (no sampling)", _minutes(wall),
                             _threads(d.get("torch_threads")), _record(f"dnnod/studies/results/{fname}")))
    return rows


def chapter_rows(chapter: int) -> List[dict]:
    """One row per stored number that chapter ``chapter`` shows (see the module docstring)."""
    if chapter in LIVE:
        rows = [_row("every number of the chapter", "computed by its cells",
                     f"`python book/_tools/build_notebooks.py {LIVE[chapter]}`", "0 (`torch.manual_seed(0)`)",
                     "under a minute", "CPU (a GPU where there is one)",
                     # No commit stamp: the chapter's own source changes with every edit of its
                     # prose, and its numbers are recomputed by each run, not stored.
                     f"`book/_src/{LIVE[chapter]}.md` (the chapter itself)")]
        if chapter == 6:
            rows += [r for r in weights_rows(("shapes-tiny",)) if "training" in r["number"]]
        return rows
    if chapter == 5:
        return weights_rows()
    if chapter == 7:
        return [r for r in weights_rows() if "test mAP" in r["number"]]
    if chapter == 8:
        return _experiment_rows("ch08_refine_gain.json", lambda n, e: [
            (f"{n}: mAP (VOC07) without / with refinement, {e['images']} images",
             f"{e['refine_false']['map_07']:.3f} / {e['refine_true']['map_07']:.3f}"),
            (f"{n}: all-point mAP without / with refinement",
             f"{e['refine_false']['map_all']:.3f} / {e['refine_true']['map_all']:.3f}")])
    if chapter == 9:
        rows = _experiment_rows("ch09_pr_curves.json", lambda n, e: [
            (f"{n}: mAP (VOC07 / all-point), {e['images']} images",
             f"{e['map_07']:.3f} / {e['map_all']:.3f}")])
        ab = _data("ch09_ablations.json")
        rows += _experiment_rows("ch09_ablations.json", lambda n, e: [
            (f"{n}: mAP, variant `{v}`", f"{e['results'][v]['map_07']:.3f}") for v in ab["variants"]])
        lam = _data("ch09_ablation_lambda.json")
        b = lam["budget"]
        for r in lam["results"].values():
            rows.append(_row(f"λ = {r['lam']:g}: mAP (VOC07), {lam['eval_images']} shapes test images, "
                             f"{b['steps']} steps", f"{r['map_07']:.3f}", f"`{lam['command']}`", "0",
                             _minutes(lam["wall_time_s"]) + " (all four)", _threads(lam.get("torch_threads")),
                             _record("dnnod/studies/results/ch09_ablation_lambda.json")))
        for name, how in (("ch09_union.json", ""),
                          ("ch09_union_explain.json", ", suppression by explained support")):
            un = _data(name)
            for kind, r in un["results"].items():
                rows.append(_row(f"perfect masks, two objects of one class {kind}{how}: AP (VOC07), "
                                 f"{r['scenes']} scenes", f"{r['ap_07']:.3f}", f"`{un['command']}`",
                                 un["seed"], _minutes(un["wall_time_s"]) + " (all three kinds)",
                                 _threads(un.get("torch_threads")), _record(f"dnnod/studies/results/{name}")))
        t1 = _data("ch09_paper_table1.json")
        rows.append(_row("the paper's Table 1 (VOC2007 test AP)",
                         f"DetectorNet mAP {t1['map']['DetectorNet']:.3f} (mean of the paper's per-class AP)",
                         "read from the paper", "–", "–", "–", _record("dnnod/studies/results/ch09_paper_table1.json")))
        return rows
    if chapter == 10:
        rows = []
        race = _data("ch10_race.json")
        for r in race["runs"]:
            name = {"detectornet": "DetectorNet tiny", "fasterrcnn": "Faster R-CNN"}.get(r["detector"], r["detector"])
            rows.append(_row(f"race, {name}, {r['budget_min']:g} min: AP, {r['eval_images']} Penn-Fudan test images",
                             f"{r['ap50_voc07']:.3f}", f"`{r['command']}`", r["seed"],
                             f"{r['train_s']:.0f} s of training ({r['steps']} iterations), {r['date']}, "
                             f"commit {r['commit']}", r["hardware"], _record("dnnod/studies/results/ch10_race.json")))
        d = _data("ch10_detectornet.json")
        rows.append(_row(f"DetectorNet tiny (shipped): AP, {d['test_images']} Penn-Fudan test images",
                         f"{d['ap50_voc07']:.3f}", f"`{d['command']}`", "–",
                         f"{d['cpu_seconds_per_image']:.2f} CPU s per image", _threads(d.get("torch_threads")),
                         _record("dnnod/studies/results/ch10_detectornet.json")))
        hd = _data("ch10_heads.json")
        for h in hd["heads"]:
            rows.append(_row(f"mask head `{h['head']}`: mAP after {h['steps']} steps, shapes",
                             f"{h['map']:.3f}", f"`{hd['command']}`", hd["seed"],
                             f"{h['train_cpu_s']:.0f} CPU s", _threads(hd.get("torch_threads")),
                             _record("dnnod/studies/results/ch10_heads.json")))
        gpu = _data("ch10_gpu_runs.json")
        for r in gpu["runs"]:
            rows.append(_row(f"GPU run `{r['run']}` ({r['data']}, {r['arch']}, {r['head']}): mAP",
                             f"{r['map']:.3f}", f"`{gpu['command']}`", "see the run name",
                             _minutes(r["wall_s"]), r.get("hardware", "–"),
                             _record("dnnod/studies/results/ch10_gpu_runs.json")))
        return rows
    raise ValueError(f"no records for chapter {chapter}")


def readme_sections(chapter: int) -> List[str]:
    """The headings of ``dnnod/weights/README.md`` listed for ``chapter`` that the README has."""
    from dnnod.checkpoint import WEIGHTS_DIR
    text = (WEIGHTS_DIR / "README.md").read_text(encoding="utf-8")
    return [s for s in README_SECTIONS.get(chapter, []) if s in text]


def _cell(v) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: List[dict], columns=None) -> str:
    """A Markdown (MyST/GFM) table of ``rows``. By default four columns, narrow enough for a book
    page: number, value, how it was made (command · seed · time · hardware), record; or the
    given ``columns`` of :data:`COLUMNS`."""
    if columns is None:
        columns = ("number", "value", "how it was made", "record")
        rows = [dict(r, **{"how it was made": f"{r['command']} · seed {r['seed']} · {r['time']} · "
                                               f"{r['hardware']}"}) for r in rows]
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "\n".join("| " + " | ".join(_cell(r[c]) for c in columns) + " |" for r in rows)


def chapter_section(chapter: int) -> str:
    """Appendix B's Markdown for one chapter: its table of numbers and, where the text rests on
    runs described in ``dnnod/weights/README.md``, the names of those README sections."""
    text = markdown_table(chapter_rows(chapter))
    sections = readme_sections(chapter)
    if sections:
        text += ("\n\nRuns behind the chapter's text, in `dnnod/weights/README.md`: "
                 + "; ".join(f"*{s.rstrip('.')}*" for s in sections) + ".")
    return text
