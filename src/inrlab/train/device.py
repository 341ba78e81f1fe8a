"""Where and how a run computes: device, precision (bf16 where it pays), memory format,
torch.compile."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from inrlab.errors import InrlabError
from inrlab.machine import bf16_speedup
from inrlab.models.contract import Autoencoder


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise InrlabError(f"unknown device '{device}'; use auto, cpu, cuda or cuda:N") from None
    if resolved.type not in ("cpu", "cuda"):
        raise InrlabError(f"device '{device}' is not supported: inrlab trains on cpu or cuda "
                          "(auto, cpu, cuda, cuda:N)")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InrlabError(f"device '{device}' asked for, but CUDA is not available here")
    return resolved


def bf16_units(device: torch.device) -> str | None:
    """Why ``device`` runs bf16 matrix products fast (a short reason), or None."""
    if device.type == "cuda":
        return "a CUDA GPU with bf16 support" if torch.cuda.is_bf16_supported() else None
    if device.type != "cpu":
        return None
    checks = (("_is_amx_tile_supported", "AMX"), ("_is_avx512_bf16_supported", "AVX512-BF16"))
    found = [name for probe, name in checks if getattr(torch.cpu, probe, lambda: False)()]
    return f"this CPU has {' and '.join(found)} units" if found else None


def resolve_precision(precision: str, device: torch.device) -> tuple[str, str]:
    """(the precision to train in, why): ``auto`` becomes bf16 where ``bf16_units`` and, on
    a CPU, where its bf16 matrix products also measure faster than fp32 ones (``machine.
    bf16_speedup``, ~60 ms): CPUs with the same AVX512-BF16 flag differ, 2.5x faster on a
    2-core AMD EPYC, ~1.8x slower on a 2-core Intel Xeon (bench/README.md)."""
    if precision != "auto":
        return precision, "set in the experiment"
    reason = bf16_units(device)
    if not reason:
        return "fp32", f"no bf16 units on this {device.type}"
    if device.type == "cpu":
        speedup = bf16_speedup("cpu")
        if speedup < 1:
            return "fp32", (f"{reason}, but its bf16 matrix products measured "
                            f"{1 / speedup:.1f}x slower than fp32")
        reason += f", bf16 matrix products measured {speedup:.1f}x faster than fp32"
    return "bf16", reason


# compile: auto compiles only a run on a CUDA device planned for at least this many steps,
# so the minute or so of compiling is a small share of it.
AUTO_COMPILE_MIN_STEPS = 5_000


def resolve_compile(setting: bool | str, device: torch.device,
                    planned_steps: int | None) -> tuple[str | None, str]:
    """(the torch.compile mode, or None for eager, and why). ``auto``: compile on a CUDA
    device for runs of at least ``AUTO_COMPILE_MIN_STEPS`` steps; never on a CPU, where
    inductor took 2-4 minutes to compile a training step of the logs' models on a 2-core
    machine and then ran it at 0.9x and 0.2x the eager default (bench/README.md)."""
    if setting is False:
        return None, "set in the experiment"
    if setting != "auto":
        return ("default" if setting is True else str(setting)), "set in the experiment"
    if device.type != "cuda":
        return None, (f"auto: eager on a {device.type}, where compiling took minutes and "
                      "then ran slower")
    if planned_steps is None or planned_steps < AUTO_COMPILE_MIN_STEPS:
        planned = "an unknown number of" if planned_steps is None else f"{planned_steps:,}"
        return None, (f"auto: eager for {planned} steps (compiles from "
                      f"{AUTO_COMPILE_MIN_STEPS:,})")
    return "default", f"auto: compiled for {planned_steps:,} steps on {device.type}"


def flush_denormals() -> bool:
    """Treat denormal floats (below ~1.2e-38 in fp32) as zero on this thread and on the
    threads it starts later: OpenMP's workers copy the setting when they are created, so
    call it before the first parallel operation (``run_entry`` does, before it builds
    anything: ``inrlab run`` and a sweep's workers). A run whose activations or gradients
    reach that range (seen after a loss spike) otherwise steps 2.4-4x slower on a CPU
    (experiments/README.md, "issue 43, fifth pass"); no fp32 training step can resolve
    such values against its others anyway. False where the CPU has no such mode."""
    return torch.set_flush_denormal(True)


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast (fp32 master weights) for ``precision`` "bf16", else nothing."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def channels_last(model: nn.Module, device: torch.device) -> str | None:
    """On a CPU, store the 2-D convolutions' weights channels-last (NHWC), in place, and say
    so; else None. oneDNN's convolutions then run in NHWC, which bench/throughput.py
    measured 1.07-1.36x faster for the logs' encoders (forward + backward, fp32, an AVX2
    CPU); the function and the state-dict keys are the same."""
    if device.type != "cpu":
        return None
    convolutions = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    if not convolutions:
        return None
    model.to(memory_format=torch.channels_last)
    return f"{len(convolutions)} convolutions channels-last (NHWC) on the cpu"


def compile_model(model: Autoencoder, mode: str = "default") -> None:
    """torch.compile ``model`` in place (its state_dict keys stay the same): its ``encode``
    and ``decode`` (what the trainers call; ``forward`` goes through them) and its implicit
    decoder's ``query`` (what pixel-subset training calls). ``mode``: torch.compile's
    ("reduce-overhead" replays CUDA graphs: no per-kernel launch cost for the small kernels
    of a batch-64 step)."""
    model.encode = torch.compile(model.encode, mode=mode)  # type: ignore[method-assign]
    model.decode = torch.compile(model.decode, mode=mode)  # type: ignore[method-assign]
    decoder = model.implicit_decoder
    if decoder is not None:
        decoder.query = torch.compile(decoder.query, mode=mode)  # type: ignore[method-assign]
