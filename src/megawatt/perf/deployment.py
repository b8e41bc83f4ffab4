"""A deployment: one model on one replica's worth of hardware with a parallel plan, precision and
engine settings (speculative decoding's among them). Pure data; everything the performance model
needs to time a step."""

from __future__ import annotations

from dataclasses import dataclass, field

from megawatt.errors import InputError
from megawatt.hardware import Device, System
from megawatt.model import ModelSpec
from megawatt.perf.efficiency import Efficiencies, efficiencies_for, family_of
from megawatt.units import bytes_per_element

WEIGHT_DTYPES = ("native", "bf16", "fp8", "fp4")
KV_DTYPES = ("bf16", "fp8")


def tokens_per_verify(draft_tokens: int, acceptance: float) -> float:
    """Expected tokens one verify step yields: `(1 - a^(k+1)) / (1 - a)` (k+1 when a = 1)."""
    if draft_tokens < 0:
        raise InputError(f"draft_tokens must be >= 0; got {draft_tokens}.")
    if not 0.0 <= acceptance <= 1.0:
        raise InputError(f"acceptance must be in [0, 1]; got {acceptance}.")
    if acceptance == 1.0:
        return float(draft_tokens + 1)
    return (1.0 - acceptance ** (draft_tokens + 1)) / (1.0 - acceptance)


@dataclass(frozen=True)
class Speculation:
    """Speculative decoding settings: `draft_tokens` (k) drafted per step, each accepted with
    probability `acceptance`; each drafted token costs `draft_cost` of a decode step."""

    draft_tokens: int = 3
    acceptance: float = 0.8
    draft_cost: float = 0.1

    def __post_init__(self) -> None:
        tokens_per_verify(self.draft_tokens, self.acceptance)  # validates both
        if not 0.0 <= self.draft_cost <= 1.0:
            raise InputError(f"draft_cost must be in [0, 1] of a decode step; got {self.draft_cost}.")

    @property
    def tokens_per_step(self) -> float:
        """Expected tokens per sequence per verify step."""
        return tokens_per_verify(self.draft_tokens, self.acceptance)


@dataclass(frozen=True)
class Deployment:
    """One serving replica: `model` on `tp x pp` devices of `system` (wafers: `pp` = wafers).

    weight_dtype: `native` keeps the published format per component (gpt-oss: MXFP4 experts,
    BF16 elsewhere); otherwise every linear layer uses this format (embeddings stay BF16),
    except that FP4 on a model published in FP8 (DeepSeek-V3/R1) quantises the routed experts
    only, as NVIDIA's FP4 release of DeepSeek-R1 does.
    ep: expert-parallel degree across the replica's devices (1 = experts sharded like TP).
    attention_dp: attention runs data-parallel over the tp devices (each holds every attention
    weight and the KV cache of its own 1/tp of the sequences, as DeepSeek-style engines do for
    MLA, whose latent cache tensor parallelism would replicate); MLPs stay tp/ep-sharded. With
    attention_dp and ep = tp x pp, tp may span several scale-up domains (wide expert
    parallelism, as DeepSeek's and SGLang's multi-node deployments): the experts' all-to-all
    and the few remaining all-reduces then cross the scale-out network.
    max_num_seqs / max_num_batched_tokens: the engine's batch cap and per-step token budget.
    weight_streaming: wafers only: weights stay in external memory (MemoryX) and stream over the
    system I/O every pass instead of living in SRAM, for models that do not fit; one wafer per
    replica, much slower per token, but nearly all of the SRAM holds KV cache.
    draft_model: wafers only: a speculative-decoding draft model kept on the same wafers (its
    weights take SRAM; its passes are timed on its own core regions).
    grid_side: wafers with a layer-grid engine (WaferLLM) only: the side of the square core grid
    each layer is timed on (None: autotuned for decode).
    speculation: serve with speculative decoding (`perf.speculative`): on GPUs the drafts cost
    `speculation.draft_cost` of a decode step each (MTP or EAGLE heads); on wafers the draft is
    `draft_model`, timed on its own core regions (its `draft_cost` is ignored).
    """

    model: ModelSpec
    system: System
    device: Device
    tp: int = 1
    pp: int = 1
    ep: int = 1
    attention_dp: bool = False
    weight_dtype: str = "native"
    kv_dtype: str = "bf16"
    engine: str = "vllm"
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    gpu_memory_utilization: float = 0.90
    efficiencies: Efficiencies | None = None
    notes: tuple[str, ...] = field(default=())
    weight_streaming: bool = False
    draft_model: ModelSpec | None = None
    grid_side: int | None = None
    speculation: Speculation | None = None

    def __post_init__(self) -> None:
        for name in ("tp", "pp", "ep", "max_num_seqs", "max_num_batched_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InputError(f"deployment.{name} must be an integer >= 1; got {value!r}.")
        if self.weight_dtype not in WEIGHT_DTYPES:
            raise InputError(
                f"deployment.weight_dtype must be one of {', '.join(WEIGHT_DTYPES)}; "
                f"got {self.weight_dtype!r}."
            )
        if self.kv_dtype not in KV_DTYPES:
            raise InputError(
                f"deployment.kv_dtype must be one of {', '.join(KV_DTYPES)}; got {self.kv_dtype!r}."
            )
        if self.ep > self.n_devices:
            raise InputError(f"deployment.ep must be <= tp x pp = {self.n_devices}; got {self.ep}.")
        spans = self.attention_dp and self.ep == self.n_devices
        if self.family == "gpu" and self.tp > self.system.n_devices and not spans:
            raise InputError(
                f"deployment.tp must fit in one {self.system.id} scale-up domain "
                f"({self.system.n_devices} devices) unless attention is data-parallel and ep "
                f"spans every device (wide expert parallelism); got tp={self.tp}. Use pp for "
                "more devices."
            )
        if self.family == "wafer" and self.tp != 1:
            raise InputError(
                "deployment.tp must be 1 on wafer-scale engines (each wafer holds "
                f"whole layers); got tp={self.tp}. Use pp = number of wafers."
            )
        if self.family != "wafer" and (self.weight_streaming or self.draft_model is not None):
            what = "weight_streaming" if self.weight_streaming else "draft_model"
            raise InputError(
                f"deployment.{what} applies to wafer-scale engines only; got it on "
                f"{self.device.id} ({self.device.kind}). GPU speculative decoding takes a "
                "Speculation with a draft_cost instead."
            )
        if self.family == "wafer" and self.speculation is not None and self.draft_model is None:
            raise InputError(
                "deployment.speculation on wafer-scale engines needs deployment.draft_model (the "
                "draft kept on the wafers, e.g. llama-3.1-8b); got none."
            )
        if self.grid_side is not None and (self.family != "wafer" or self.grid_side < 1):
            raise InputError(
                "deployment.grid_side is a wafer core-grid side >= 1 (layer-grid engines); got "
                f"{self.grid_side!r} on {self.device.id}."
            )
        if self.weight_streaming and self.pp != 1:
            raise InputError(
                "deployment.pp must be 1 with weight_streaming (each streaming wafer is its own "
                f"replica: every layer streams through the whole wafer); got pp={self.pp}."
            )
        if not 0.1 <= self.gpu_memory_utilization <= 1.0:
            raise InputError(
                "deployment.gpu_memory_utilization must be in [0.1, 1.0]; "
                f"got {self.gpu_memory_utilization}."
            )

    # -- identity ---------------------------------------------------------------------------
    @property
    def wide_ep(self) -> bool:
        """Wide expert parallelism: data-parallel attention over a tp group larger than one
        scale-up domain; then everything but the routed experts (dense MLPs, shared experts,
        LM head, norms) runs data-parallel too, each device on its own sequences."""
        return self.attention_dp and self.tp > self.system.n_devices

    @property
    def family(self) -> str:
        """`wafer` or `gpu` (every HBM accelerator)."""
        return family_of(self.device.kind)

    @property
    def n_devices(self) -> int:
        """Accelerators (or wafers) in one replica."""
        return self.tp * self.pp

    @property
    def replicas_per_system(self) -> float:
        """Replicas one system holds (a fraction when a replica spans several systems)."""
        return self.system.n_devices / self.n_devices

    @property
    def label(self) -> str:
        """Short plan description, e.g. `h200-sxm x8 tp8 fp8`."""
        plan = f"tp{self.tp}" + (f" pp{self.pp}" if self.pp > 1 else "")
        plan += f" ep{self.ep}" if self.ep > 1 else ""
        plan += " attention-dp" if self.attention_dp else ""
        if self.family == "wafer":
            plan = f"{self.pp} wafer" + ("s" if self.pp > 1 else "")
            plan += " weight-streaming" if self.weight_streaming else ""
            plan += f" +draft {self.draft_model.id}" if self.draft_model is not None else ""
        return f"{self.model.id} on {self.device.id} x{self.n_devices} {plan} {self.weight_dtype}"

    @property
    def eff(self) -> Efficiencies:
        """The efficiencies used: explicit ones, else the calibrated values of the device's
        group and engine, else the documented prior (`efficiencies_for`)."""
        return self.efficiencies or efficiencies_for(self.device, self.engine)

    # -- precision --------------------------------------------------------------------------
    def weight_dtype_of(self, component: str) -> str:
        """Storage format of a component's weights (`attention`, `mlp`, `experts`, `embedding`)."""
        if component == "embedding":
            return self.model.native_weight_dtype.get("embedding", "bf16")
        native = self.model.native_weight_dtype.get(component, "bf16")
        if self.weight_dtype == "native":
            return "bf16" if native in ("fp16", "fp32") else native
        if self.weight_dtype == "fp4" and native == "fp8" and component != "experts":
            # FP4 releases of MoE models published in FP8 quantise the routed experts only:
            # "Only the weights and activations of the linear operators within transformer
            # blocks in MoE are quantized" (nvidia/DeepSeek-R1-FP4 model card, Hugging Face).
            return "fp8"
        return self.weight_dtype

    def weight_bytes_per_param(self, component: str) -> float:
        """Bytes per weight of a component, scale factors included: FP4 that a deployment
        chooses on NVIDIA hardware is NVFP4 (TensorRT-LLM's format); published FP4 weights
        (gpt-oss) and FP4 elsewhere are MXFP4."""
        dtype = self.weight_dtype_of(component)
        if dtype == "fp4" and self.weight_dtype == "fp4" and self.device.vendor.lower() == "nvidia":
            return bytes_per_element("nvfp4")
        return bytes_per_element(dtype)

    def compute_dtype_of(self, component: str) -> str:
        """Math format of a component's GEMMs: its weight format when the device has a native
        rate for it (W8A8, W4A4), else BF16 (weight-only quantisation dequantises to BF16)."""
        dtype = self.weight_dtype_of(component)
        return dtype if self.device.has_native(dtype) else "bf16"

    def peak_flops_of(self, component: str) -> float:
        """Dense peak FLOP/s of one device for a component's GEMMs."""
        return self.device.peak_flops_for(self.compute_dtype_of(component))

    @property
    def kv_bytes_per_element(self) -> float:
        """Bytes per cached K/V element."""
        return bytes_per_element(self.kv_dtype)

    @property
    def activation_bytes(self) -> float:
        """Bytes per activation element moved between devices (BF16)."""
        return 2.0
