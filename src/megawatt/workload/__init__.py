"""Workloads: columnar request tables, token-length distributions, arrival processes, real
traces and the ChatGPT-like traffic mix. A bottom layer: imports no other megawatt package.
"""

from __future__ import annotations

from megawatt.workload.arrivals import (
    ARRIVAL_PROCESSES,
    AllAtOnce,
    ArrivalProcess,
    Diurnal,
    Gamma,
    Poisson,
    arrival_process,
)
from megawatt.workload.lengths import (
    LENGTH_DISTRIBUTIONS,
    Empirical,
    Fixed,
    LengthDistribution,
    Lognormal,
    Uniform,
    Zipf,
    length_distribution,
)
from megawatt.workload.mix import Mix, RequestClass, chatgpt_mix, mix_from_spec
from megawatt.workload.requests import Requests
from megawatt.workload.traces import (
    BUILTIN_TRACES,
    MOONCAKE_BLOCK_TOKENS,
    TraceFormat,
    builtin_trace,
    builtin_trace_with_prefixes,
    load_trace,
    load_trace_with_prefixes,
    time_scaled,
)

__all__ = [
    "ARRIVAL_PROCESSES",
    "BUILTIN_TRACES",
    "LENGTH_DISTRIBUTIONS",
    "MOONCAKE_BLOCK_TOKENS",
    "AllAtOnce",
    "ArrivalProcess",
    "Diurnal",
    "Empirical",
    "Fixed",
    "Gamma",
    "LengthDistribution",
    "Lognormal",
    "Mix",
    "Poisson",
    "RequestClass",
    "Requests",
    "TraceFormat",
    "Uniform",
    "Zipf",
    "arrival_process",
    "builtin_trace",
    "builtin_trace_with_prefixes",
    "chatgpt_mix",
    "length_distribution",
    "load_trace",
    "load_trace_with_prefixes",
    "mix_from_spec",
    "time_scaled",
]
