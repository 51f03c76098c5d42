"""Box utilities in plain torch (xyxy, absolute pixels): IoU, GIoU, greedy batched NMS."""

from __future__ import annotations

import numpy as np
import torch


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(
        min=0
    )


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU: [N, 4] x [M, 4] → [N, M]."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=-1)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return inter / union.clamp(min=1e-9)


def generalized_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Element-wise GIoU of aligned boxes [..., 4] and [..., 4] → [...]."""
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=-1)
    union = box_area(a) + box_area(b) - inter
    iou = inter / union.clamp(min=1e-9)
    hull = (torch.maximum(a[..., 2:], b[..., 2:]) - torch.minimum(a[..., :2], b[..., :2])).clamp(
        min=0
    )
    hull_area = hull.prod(dim=-1).clamp(min=1e-9)
    return iou - (hull_area - union) / hull_area


def batched_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    iou_threshold: float,
    max_keep: int | None = None,
) -> torch.Tensor:
    """Greedy per-class NMS; returns kept indices sorted by decreasing score, at most `max_keep`.

    Greedy NMS decides each box from the higher-scoring boxes only, so stopping after `max_keep`
    kept boxes gives the first `max_keep` of the full result. The IoU of a kept box with the boxes
    after it is computed when it is kept (O(kept x N), never the N x N matrix), on the host: an
    untrained detector's 1,000 candidates per image cost milliseconds, not a second.
    """
    if boxes.numel() == 0 or max_keep == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    # Shift each class to its own region so one pass suppresses within classes only.
    offset = labels.to(boxes.dtype)[:, None] * (boxes.max() + 1.0)
    order = scores.argsort(descending=True, stable=True)  # ties: lower index first
    shifted = (boxes[order] + offset[order]).cpu().numpy()
    area = _np_area(shifted)
    suppressed = np.zeros(len(order), dtype=bool)
    keep: list[int] = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        if len(keep) == max_keep:
            break
        rest = shifted[i + 1 :]
        # the arithmetic of box_iou, one row: the same float32 operations in the same order
        wh = np.maximum(
            np.minimum(shifted[i, 2:], rest[:, 2:]) - np.maximum(shifted[i, :2], rest[:, :2]), 0
        )
        inter = wh[:, 0] * wh[:, 1]
        union = np.maximum(area[i] + area[i + 1 :] - inter, np.float32(1e-9))
        suppressed[i + 1 :] |= inter / union > iou_threshold
    return order[torch.tensor(keep, dtype=torch.long, device=order.device)]


def _np_area(boxes: np.ndarray) -> np.ndarray:
    return np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
