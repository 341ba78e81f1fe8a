"""``inrlab evaluate``: score trained runs against the field's codecs (PCA, JPEG, WebP, AVIF at
the same bytes per image) and upscalers (bicubic, Lanczos of the input and of the model's own
decode), on a run's validation set or a folder of images.

- ``rows.py``: a row, PSNR/SSIM over image sets of any sizes, timing.
- ``pillow.py``: the codecs at a byte budget and Pillow's resampling.
- ``model.py``: the model's own rows (its stored code, its renders), MACs per pixel.
- ``targets.py``: runs named by directory, experiment name or experiment file; images.
- ``evaluation.py``: the tables, ``output.py``: markdown, JSON and pictures.
"""

from inrlab.evaluate.evaluation import EvaluateOptions, Evaluation, evaluate, resolve_targets
from inrlab.evaluate.model import Refinement
from inrlab.evaluate.output import markdown, read_saved, rows_json, save_in_runs, write_outputs
from inrlab.evaluate.rows import Row

__all__ = ["EvaluateOptions", "Evaluation", "evaluate", "resolve_targets", "Refinement",
           "markdown", "read_saved", "rows_json", "save_in_runs", "write_outputs", "Row"]
