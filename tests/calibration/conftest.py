"""Tiny measurement files for the calibration tests: rows that can be checked by hand."""

from __future__ import annotations

from megawatt.calibration import COLUMNS, Measurement, parse_measurements
from megawatt.hardware import load_catalog
from megawatt.perf import efficiency_key, prior
from megawatt.perf.efficiency import engine_release

CATALOG = load_catalog()
HEADER = ",".join([*COLUMNS, "notes"])


def csv_text(*rows: str) -> str:
    return "\n".join([HEADER, *rows]) + "\n"


# id,hardware,n_devices,model,weight_dtype,engine,scenario,input_len,output_len,dataset,
# concurrency,n_requests,ttft_p99_limit_ms,tpot_p99_limit_ms,spec_decode,metric,value,notes
SOLO = (
    "T1,h200-sxm,1,llama-3.1-8b,fp8,trtllm,single_user,128,64,fixed,1,,,,no,"
    "output_tokens_per_s_per_user,300,"
)
OFFLINE = "T2,h200-sxm,1,llama-3.1-8b,fp8,trtllm,offline,128,128,fixed,,40,,,no,output_tokens_per_s,9000,TP1"
MICRO = "T3,wse2,1,,bf16,waferllm,microbenchmark,,,unknown,,,,,unknown,ratio,606,"
CLOUD = "T4,h100-sxm,,llama-3.1-8b,,other,offline,,,unknown,,,,,unknown,output_tokens_per_s,5000,"
GROQ = "T5,groq-lpu,,llama-2-70b,,groq,single_user,,,unknown,,,,,unknown,output_tokens_per_s_per_user,300,"

PRIORS = {
    efficiency_key(CATALOG.device("h200-sxm"), engine_release("trtllm")): prior("gpu", "trtllm"),
    efficiency_key(CATALOG.device("h100-sxm"), "other"): prior("gpu", "other"),
}


def rows(*lines: str) -> tuple[Measurement, ...]:
    return parse_measurements(csv_text(*lines), "tiny.csv", CATALOG)
