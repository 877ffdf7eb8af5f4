"""Greedy non-maximum suppression (paper Sec. 5.2), in the IoU and the DPM variants.

Boxes are ``Tensor[N, 4]`` xyxy in continuous pixel coordinates (edges; x right, y down).
"""
from __future__ import annotations

from typing import Callable, List, Optional

import torch
import torchvision

NMS_MODES = ("iou", "dpm")

def nms(boxes: torch.Tensor, scores: torch.Tensor, overlap: float = 0.5, mode: str = "iou",
        max_keep: Optional[int] = None,
        accept: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        chunk: int = 64) -> torch.Tensor:
    """Greedy NMS; indices of kept boxes, best first.

    ``mode="iou"``: torchvision's NMS (intersection over union). ``mode="dpm"``: Felzenszwalb et
    al.'s variant that the paper cites — overlap is intersection over the *suppressed* box's area,
    so boxes nested inside a better one are removed too.

    ``accept(boxes [n, 4]) -> bool [n]`` (e.g. the paper's box classifier, Sec. 5.2): the result
    is that of NMS over the accepted boxes only, but ``accept`` is asked lazily, ``chunk`` boxes
    at a time (doubling up to 1024 while it keeps being needed), and only about boxes that no
    kept box has suppressed yet (ours: with a ``max_keep`` of 10 it usually sees tens of boxes
    instead of thousands). A rejected box suppresses nothing.
    """
    if mode not in NMS_MODES:
        raise ValueError(f"nms mode must be one of {NMS_MODES}; got {mode!r}")
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long)
    if mode == "iou" and accept is None:
        keep = torchvision.ops.nms(boxes.float(), scores.float(), float(overlap))
        return keep if max_keep is None else keep[:max_keep]
    order = torch.argsort(scores, descending=True)
    b = boxes[order].double()
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    alive = torch.ones(len(b), dtype=torch.bool)
    decided = torch.zeros(len(b), dtype=torch.bool)
    ok = torch.ones(len(b), dtype=torch.bool)
    keep: List[int] = []
    limit = len(b) if max_keep is None else max_keep
    i = 0
    # Each step is vectorised over all boxes; the loop runs once per kept (or rejected) box.
    while len(keep) < limit:
        nz = torch.nonzero(alive[i:])
        if nz.numel() == 0:
            break
        i = i + int(nz[0])
        if accept is not None and not decided[i]:
            ask = torch.nonzero(alive & ~decided).squeeze(1)[:chunk]     # starts at i
            ok[ask] = _accepted(accept, boxes[order[ask]])
            decided[ask] = True
            alive[ask[~ok[ask]]] = False            # rejected boxes take no part at all
            chunk = min(2 * chunk, 1024)            # a run of rejections: ask more at once
            if not ok[i]:
                continue
        alive[i] = False
        keep.append(i)
        iw = (torch.minimum(b[i, 2], b[:, 2]) - torch.maximum(b[i, 0], b[:, 0])).clamp(min=0)
        ih = (torch.minimum(b[i, 3], b[:, 3]) - torch.maximum(b[i, 1], b[:, 1])).clamp(min=0)
        inter = iw * ih
        ov = inter / area if mode == "dpm" else inter / (area[i] + area - inter)
        alive &= ~(ov > overlap)
    return order[torch.tensor(keep, dtype=torch.long)]


def _accepted(classifier: Callable[[torch.Tensor], torch.Tensor], boxes: torch.Tensor) -> torch.Tensor:
    keep = torch.as_tensor(classifier(boxes.float()))
    if keep.shape != (len(boxes),) or keep.dtype != torch.bool:
        raise ValueError(f"classifier(boxes [N, 4]) must return a bool tensor [N]; got "
                         f"{tuple(keep.shape)} {keep.dtype}")
    return keep.cpu()
