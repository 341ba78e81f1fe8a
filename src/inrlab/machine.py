"""The machine a figure was measured on: the CPU's flags that decide GEMM speed (or the GPU)
and the measured GEMM rates, printed beside every benchmark's figures."""

from __future__ import annotations

import time
from pathlib import Path

import torch


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def cpu_summary() -> str:
    """The CPU's model and the flags that decide GEMM speed (AVX2/AVX-512, bf16, AMX)."""
    model, flags = "CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "CPU":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
    return f"{model} (flags: {' '.join(f for f in wanted if f in flags) or 'none of note'})"


def gemm_rates(device: str, seconds: float = 2.0) -> dict[str, float]:
    """FLOP/s of torch.matmul on 2048x2048 in fp32 and bf16. A dtype whose 512x512 product
    already runs below 2% of the fp32 rate (bf16 emulated on a CPU without bf16 units, where
    one 2048x2048 product takes about a minute) is reported from that probe."""
    rates: dict[str, float] = {}
    for dtype in (torch.float32, torch.bfloat16):
        name = str(dtype).removeprefix("torch.")
        probe = _matmul_rate(512, dtype, device, repeats=1)
        if rates and probe < 0.02 * rates["float32"]:
            rates[name] = probe
            continue
        rates[name] = _matmul_rate(2048, dtype, device, seconds=seconds)
    return rates


def bf16_speedup(device: str = "cpu", n: int = 512, repeats: int = 5) -> float:
    """How many times faster ``n x n`` bf16 products run than fp32 ones on ``device``, each
    dtype's rate the best of ``repeats`` single products (the best is the least disturbed by
    other work on the machine). 512: large enough that conversions do not decide it, ~60 ms
    in all on a 2-core Xeon (0.56-0.69x there; 256: 0.53-0.58x, 1024: 0.53-0.64x in 0.2 s)."""
    best = {dtype: max(_matmul_rate(n, dtype, device) for _ in range(repeats))
            for dtype in (torch.float32, torch.bfloat16)}
    return best[torch.bfloat16] / best[torch.float32]


def _matmul_rate(n: int, dtype: torch.dtype, device: str, seconds: float = 0.0,
                 repeats: int = 1) -> float:
    """FLOP/s of ``n x n`` products: at least ``repeats`` of them and ``seconds`` long. The
    operands come from a generator of their own: measuring the machine (as ``precision:
    auto`` does when a trainer is built) leaves torch's global random stream untouched."""
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    torch.matmul(a, b)  # warm-up
    synchronize(device)
    count, start = 0, time.perf_counter()
    while count < repeats or time.perf_counter() - start < seconds:
        torch.matmul(a, b)
        count += 1
    synchronize(device)
    return 2 * n**3 * count / (time.perf_counter() - start)


def print_machine(device: str) -> dict[str, float]:
    """Print the torch version, the device (a CPU's flags that decide GEMM speed), threads
    and the measured GEMM rates, which every figure is read against; returns the rates."""
    name = torch.cuda.get_device_name() if device.startswith("cuda") else cpu_summary()
    print(f"torch {torch.__version__}, {name}, {torch.get_num_threads()} threads")
    rates = gemm_rates(device)
    print(f"GEMM 2048x2048: fp32 {rates['float32'] / 1e9:.0f} GFLOP/s, "
          f"bf16 {rates['bfloat16'] / 1e9:.0f} GFLOP/s")
    return rates


def available_memory() -> int:
    """Bytes of memory the system can give a process now (Linux: MemAvailable), or the
    physical memory where that cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
