"""The contract every implicit decoder follows.

``query(code, coords)`` maps codes (B, *code_shape) and pixel coordinates (N, 2) shared by
all images, or (B, N, 2) per image, to colours (B, N, C). ``forward(code, shape)`` renders
whole (H, W) images from the pixel grid; without gradients and in eval mode it goes in
chunks of pixels so memory stays bounded at any resolution.

A ``None`` in ``code_shape`` means any size along that axis (a latent grid that follows the
encoder's feature map).

A decoder that also wants the size of the rendered pixels (LIIF's "cell") sets
``takes_pixel_size = True`` and gets ``pixel_size=(width, height)`` in coordinate units.
"""

from __future__ import annotations

import contextlib
from typing import Any, Sequence

import torch
from torch import nn

from inrlab.models.layers import check_positive_int, check_shape
from inrlab.models.posenc import pixel_grid

# Upper bound on the floats of one hidden activation while rendering in chunks (4 MiB fp32):
# small enough that a chunk's activations stay in cache between layers, which on a CPU made
# a 1024x1024 render about 3x faster than 64 MiB chunks; large enough for efficient GEMMs.
RENDER_CHUNK_ELEMENTS = 2**20
# On a GPU, chunks are sized by its free memory instead (up to 1 GiB of fp32 activations:
# a 1024x1024 render of a 128-wide decoder in one pass), since there each chunk costs a
# round of kernel launches while no cache needs to be kept warm.
GPU_RENDER_CHUNK_ELEMENTS = 2**28


def render_chunk_elements(device: torch.device) -> int:
    """Floats of one hidden activation per render chunk on ``device``: 4 MiB on a CPU, an
    eighth of the free memory (at most 1 GiB) on a CUDA device."""
    if device.type != "cuda":
        return RENDER_CHUNK_ELEMENTS
    free, _ = torch.cuda.mem_get_info(device)
    return max(RENDER_CHUNK_ELEMENTS, min(GPU_RENDER_CHUNK_ELEMENTS, free // (8 * 4)))


PROGRESS_DELAY_S = 3.0  # a render shows its progress (on stderr) once it takes longer
# Renders of fewer pixels (validation batches: 64 tiles of 32x32 are 65,536) get no bar
# object at all: it cost 25 us per decode and a monitor thread, for a bar never shown.
PROGRESS_MIN_PIXELS = 2**18


def rendering_progress(pixels: int) -> Any:
    """A progress bar of rendered pixels that appears only when the render has taken over
    ``PROGRESS_DELAY_S`` seconds, then updates every second; None (in a null context) for
    a render under ``PROGRESS_MIN_PIXELS``."""
    if pixels < PROGRESS_MIN_PIXELS:
        return contextlib.nullcontext()
    from tqdm import tqdm

    return tqdm(total=pixels, unit="px", unit_scale=True, delay=PROGRESS_DELAY_S,
                mininterval=1.0, leave=False, desc="rendering", dynamic_ncols=True)


def image_arguments(image_shape: Sequence[int | None]) -> dict[str, Any]:
    args: dict[str, Any] = {"num_output_channels": image_shape[0]}
    if None not in image_shape[1:]:
        args["default_shape"] = tuple(image_shape[1:])
    return args


class ImplicitDecoder(nn.Module):
    out_channels: int
    default_shape: tuple[int, int] | None
    code_shape: tuple[int | None, ...]  # one image's code: (C,) for a global code
    max_width: int = 1  # widest hidden layer times queries per pixel, sizes render chunks
    takes_pixel_size: bool = False

    @classmethod
    def code_arguments(cls, code_shape: Sequence[int | None],
                       image_shape: Sequence[int | None]) -> dict[str, Any]:
        """The constructor arguments that follow from an encoder of codes ``code_shape`` and
        images ``image_shape`` (C, H, W): the code's channels, ``num_output_channels`` and,
        for an encoder of one image size, ``default_shape``. ``EncoderDecoder`` fills them
        into a decoder spec that leaves them out. A decoder whose code is flat takes its
        size as ``num_input_channels``; others override this."""
        return {"num_input_channels": code_shape[0], **image_arguments(image_shape)}

    @property
    def code_dims(self) -> int:
        """Dims of a batched code, e.g. 2 for (B, C)."""
        return len(self.code_shape) + 1

    def query(self, code: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def prepare(self, code: torch.Tensor) -> torch.Tensor:
        """The part of decoding that depends on the code alone (e.g. a conv stage over a
        latent grid), computed once per ``forward`` rather than once per render chunk.
        ``query_prepared(prepare(code), coords)`` must equal ``query(code, coords)``; by
        default nothing is prepared."""
        return code

    def query_prepared(self, prepared: torch.Tensor, coords: torch.Tensor,
                       **options: tuple[float, float]) -> torch.Tensor:
        """``query`` on what ``prepare`` returned."""
        return self.query(prepared, coords, **options)

    def resolve_shape(self, shape: Sequence[int] | None) -> tuple[int, int]:
        if shape is None:
            shape = self.default_shape
        if shape is None:
            raise ValueError(f"{type(self).__name__} needs shape=(H, W) (no default_shape set)")
        if len(shape) != 2 or min(int(s) for s in shape) <= 0:
            raise ValueError(f"render shape must be (H, W) with positive sizes, got {tuple(shape)}")
        return int(shape[0]), int(shape[1])

    def set_io(self, code_shape: tuple[int | None, ...], out_channels: int,
               default_shape: Sequence[int] | None) -> None:
        """Record (and check) what every decoder declares: one image's code shape, the
        output channels and the optional default render size."""
        self.code_shape = tuple(code_shape)
        self.out_channels = check_positive_int("num_output_channels", out_channels)
        self.default_shape = (check_shape("default_shape", default_shape, 2)
                              if default_shape is not None else None)

    def _pixel_grid(self, code: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """The coordinates (H*W, 2) at which ``forward`` renders an (H, W) image:
        ``pixel_grid`` on the code's device, in its dtype (float32 for integer codes)."""
        dtype = code.dtype if code.is_floating_point() else torch.float32
        return pixel_grid((height, width), device=code.device, dtype=dtype)

    def _query_options(self, height: int, width: int) -> dict[str, tuple[float, float]]:
        if not self.takes_pixel_size:
            return {}
        return {"pixel_size": (2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1))}

    def query_pixels(self, code: torch.Tensor, shape: Sequence[int],
                     index: torch.Tensor, jitter: float = 0.0) -> torch.Tensor:
        """Colours (B, n, C) of the pixels at flat (row-major) indices ``index`` (B, n) of an
        (H, W) render: what ``forward(code, shape)`` gives there, computed for those only.

        ``jitter`` moves each query by a random offset drawn uniformly from ``[-jitter,
        jitter]`` pixel spacings along each axis (0.5: anywhere in the pixel's own area), so
        a decoder trained on such queries is also taught between the pixel centres."""
        height, width = self.resolve_shape(shape)
        grid = self._pixel_grid(code, height, width)  # (H*W, 2)
        coords = grid[index]  # (B, n, 2)
        if jitter:
            # spacing of this geometry's pixel centres, (x, y) in coordinate units
            step_x = grid[1, 0] - grid[0, 0] if width > 1 else grid.new_tensor(0.0)
            step_y = grid[width, 1] - grid[0, 1] if height > 1 else grid.new_tensor(0.0)
            noise = torch.rand_like(coords) * 2 - 1  # (B, n, 2) in [-1, 1]
            coords = coords + jitter * noise * torch.stack([step_x, step_y])
        return self.query(code, coords, **self._query_options(height, width))

    def forward(self, code: torch.Tensor, shape: Sequence[int] | None = None) -> torch.Tensor:
        single = code.dim() == self.code_dims - 1
        if single:
            code = code.unsqueeze(0)
        given = tuple(code.shape[1:])
        if len(given) != len(self.code_shape) or any(
                want is not None and want != size for want, size in zip(self.code_shape, given)):
            expected = ", ".join("any" if size is None else str(size) for size in self.code_shape)
            raise ValueError(f"{type(self).__name__} expects codes of shape (B, {expected}), "
                             f"got {tuple(code.shape)}")
        height, width = self.resolve_shape(shape)
        coords = self._pixel_grid(code, height, width)  # (N, 2)
        batch = code.shape[0]
        options = self._query_options(height, width)
        prepared = self.prepare(code)
        if torch.is_grad_enabled() or self.training:
            colours = self.query_prepared(prepared, coords, **options)  # (B, N, C)
        else:
            budget = render_chunk_elements(code.device)
            chunk = max(1, budget // (batch * max(self.max_width, 1)))
            # Each chunk is written into one output allocated up front: chunk results kept
            # in a list interleave long-lived blocks with the chunks' short-lived
            # activations, and the heap then grew to ~200 bytes per pixel (measured on a
            # CPU; 40 bytes per pixel this way).
            colours = None
            with rendering_progress(batch * height * width) as progress:
                for start in range(0, coords.shape[0], chunk):
                    part = self.query_prepared(prepared, coords[start:start + chunk], **options)
                    if colours is None:  # (B, N, C) in the decoder's output dtype
                        colours = part.new_empty(batch, coords.shape[0], part.shape[-1])
                    colours[:, start:start + part.shape[1]] = part
                    if progress is not None:
                        progress.update(batch * part.shape[1])
        images = colours.transpose(1, 2).reshape(batch, self.out_channels, height, width)
        return images[0] if single else images
