"""The dataset layouts `gppf-shards convert` understands, by name.

Each reader `read_<layout>(src, images, split)` lists a dataset as a `Converted` (items in a
deterministic order plus a loader, see `layouts.base`). `images` is the image directory for the
annotation-file layouts (default: next to the annotation file, or its `images/` subfolder);
`split` picks the part of a dataset root that holds the train or val split. Source items that
cannot become a valid sample are skipped and counted by reason.
"""

from __future__ import annotations

from collections.abc import Callable

from gppf_dist.data.convert.layouts.aic import read_aic_keypoints
from gppf_dist.data.convert.layouts.attributes import read_attr_csv
from gppf_dist.data.convert.layouts.base import Converted
from gppf_dist.data.convert.layouts.coco import read_coco_det, read_coco_keypoints
from gppf_dist.data.convert.layouts.coco_stuff import read_coco_stuff
from gppf_dist.data.convert.layouts.face_rec import read_face_rec
from gppf_dist.data.convert.layouts.folders import read_face_folders, read_imagefolder
from gppf_dist.data.convert.layouts.msmt17 import read_msmt17
from gppf_dist.data.convert.layouts.pedestrian_mat import read_pa100k, read_rap
from gppf_dist.data.convert.layouts.reid import read_reid
from gppf_dist.data.convert.layouts.seg import read_ade20k, read_seg_png

LAYOUTS: dict[str, tuple[Callable[..., Converted], str]] = {
    "imagefolder": (read_imagefolder, "cls"),
    "coco-det": (read_coco_det, "det"),
    "coco-keypoints": (read_coco_keypoints, "pose"),
    "aic-keypoints": (read_aic_keypoints, "pose"),
    "seg-png": (read_seg_png, "seg"),
    "ade20k": (read_ade20k, "seg"),
    "coco-stuff": (read_coco_stuff, "seg"),
    "reid": (read_reid, "reid"),
    "msmt17": (read_msmt17, "reid"),
    "face-folders": (read_face_folders, "face"),
    "face-rec": (read_face_rec, "face"),
    "attr-csv": (read_attr_csv, "attr"),
    "pa100k": (read_pa100k, "attr"),
    "rap": (read_rap, "attr"),
}
"""Layout name -> (reader, default task name)."""
