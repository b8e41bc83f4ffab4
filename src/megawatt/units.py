"""Units and conversions. Inside megawatt everything is SI (seconds, bytes, watts, FLOP, dollars);
names carry their unit (`power_w`, `ttft_s`); conversion happens only at the edges, here.

GB means 10**9 bytes and GiB 2**30 bytes; they are never mixed silently.
"""

from __future__ import annotations

from typing import Final

MB: Final = 1e6
GB: Final = 1e9
TB: Final = 1e12
KIB: Final = 1024.0
GIB: Final = 1024.0**3

TERA: Final = 1e12
GIGA: Final = 1e9

KW: Final = 1e3
MW: Final = 1e6

US: Final = 1e-6

SECONDS_PER_HOUR: Final = 3600.0
SECONDS_PER_DAY: Final = 86_400.0
HOURS_PER_YEAR: Final = 8766.0  # 365.25 days
SECONDS_PER_YEAR: Final = HOURS_PER_YEAR * SECONDS_PER_HOUR

# Bytes per element of each numeric format megawatt knows. MXFP4 / NVFP4 carry one 8-bit scale per
# 32 (MX) or 16 (NV, with FP8 scales) elements; 4.25 bits is the MXFP4 figure (OCP MX spec v1.0).
BYTES_PER_ELEMENT: Final[dict[str, float]] = {
    "fp32": 4.0,
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "fp4": 4.25 / 8.0,  # MXFP4 (OCP MX): an E8M0 scale per 32 values
    "nvfp4": 4.5 / 8.0,  # NVFP4: an E4M3 scale per 16 values (NVIDIA, "Introducing NVFP4", 2025)
}


def bytes_per_element(dtype: str) -> float:
    """Bytes per element of a numeric format (`bf16`, `fp8`, `fp4`, ...)."""
    try:
        return BYTES_PER_ELEMENT[dtype]
    except KeyError:
        from megawatt.errors import InputError

        known = ", ".join(sorted(BYTES_PER_ELEMENT))
        raise InputError(f"dtype must be one of {known}; got {dtype!r}.") from None
