"""The arithmetic coder: a classic integer coder (32-bit interval, carries as pending
bits), lossless and exact, over per-symbol cumulative frequency tables (as
``LevelPrior.frequency_tables`` gives). Kept in-house (about 100 lines, no dependency): a
code is ~100 symbols, and the decoder asks for each next table with the symbols decoded so
far (the neighbour context), a callback a library coder would need an adapter for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

_BITS = 32
_FULL = (1 << _BITS) - 1
_HALF = 1 << (_BITS - 1)
_QUARTER = 1 << (_BITS - 2)


def encode_levels(symbols: list[int], tables: list[list[int]]) -> bytes:
    """Arithmetic-code ``symbols``, symbol ``i`` with the cumulative frequencies
    ``tables[i]`` (as from ``LevelPrior.frequency_tables``). The count of symbols is not
    stored: the decoder is told it."""
    low, high, pending = 0, _FULL, 0
    out: list[int] = []

    def emit(bit: int) -> None:
        nonlocal pending
        out.append(bit)
        out.extend([1 - bit] * pending)
        pending = 0

    for symbol, cumulative in zip(symbols, tables):
        span, total = high - low + 1, cumulative[-1]
        high = low + span * cumulative[symbol + 1] // total - 1
        low = low + span * cumulative[symbol] // total
        while True:
            if high < _HALF:
                emit(0)
            elif low >= _HALF:
                emit(1)
                low, high = low - _HALF, high - _HALF
            elif low >= _QUARTER and high < _HALF + _QUARTER:
                pending += 1
                low, high = low - _QUARTER, high - _QUARTER
            else:
                break
            low, high = 2 * low, 2 * high + 1
    # Two more bits pin a value inside [low, high]; the decoder reads missing bits as 0.
    pending += 1
    emit(0 if low < _QUARTER else 1)
    data = bytearray()
    for start in range(0, len(out), 8):
        byte = out[start:start + 8]
        data.append(int("".join(map(str, byte)).ljust(8, "0"), 2))
    return bytes(data).rstrip(b"\0")  # trailing zero bytes are implied


def decode_levels(data: bytes, tables: Sequence[list[int]] | Callable[[list[int]], list[int]],
                  count: int | None = None) -> list[int]:
    """The symbols ``encode_levels`` stored in ``data``, one per table. ``tables`` may also
    be a function from the symbols decoded so far to the next one's table (tables that
    depend on earlier symbols); then ``count`` says how many symbols to decode."""
    if callable(tables):
        if count is None:
            raise ValueError("decode_levels needs the count of symbols with a table function")
        next_table = tables
    else:
        count = len(tables)
        next_table = lambda decoded: tables[len(decoded)]  # noqa: E731
    bits = [(byte >> (7 - i)) & 1 for byte in data for i in range(8)]
    position = 0

    def next_bit() -> int:
        nonlocal position
        position += 1
        return bits[position - 1] if position <= len(bits) else 0

    value = 0
    for _ in range(_BITS):
        value = 2 * value + next_bit()
    low, high = 0, _FULL
    symbols: list[int] = []
    for _ in range(count):
        cumulative = next_table(symbols)
        span, total = high - low + 1, cumulative[-1]
        target = ((value - low + 1) * total - 1) // span
        symbol = _bisect(cumulative, target)
        symbols.append(symbol)
        high = low + span * cumulative[symbol + 1] // total - 1
        low = low + span * cumulative[symbol] // total
        while True:
            if high < _HALF:
                pass
            elif low >= _HALF:
                low, high, value = low - _HALF, high - _HALF, value - _HALF
            elif low >= _QUARTER and high < _HALF + _QUARTER:
                low, high, value = low - _QUARTER, high - _QUARTER, value - _QUARTER
            else:
                break
            low, high, value = 2 * low, 2 * high + 1, 2 * value + next_bit()
    return symbols


def _bisect(cumulative: list[int], target: int) -> int:
    """The symbol s with cumulative[s] <= target < cumulative[s + 1]."""
    lo, hi = 0, len(cumulative) - 2
    while lo < hi:
        middle = (lo + hi + 1) // 2
        if cumulative[middle] <= target:
            lo = middle
        else:
            hi = middle - 1
    return lo
