"""Image-generation models as data: a denoiser (UNet or diffusion transformer), a VAE decoder and
text encoders, read from `data/image_models/<id>.json`, with parameters and FLOPs per image
counted from the architecture (convolutions, linear layers, attention; norms and activations are
left out, as in megawatt's transformer counts)."""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal

from megawatt.errors import CatalogError, InputError
from megawatt.units import BYTES_PER_ELEMENT

__all__ = [
    "ENCODER_DTYPE",
    "IMAGE_DTYPES",
    "VAE_LIVE_TENSORS",
    "ImageComponent",
    "ImageModel",
    "check_dtype",
    "image_model_from_dict",
    "image_model_ids",
    "load_image_model",
]

_PACKAGE_DIR = "data/image_models"

IMAGE_DTYPES = ("bf16", "fp16", "fp8", "fp4")
"""Formats the denoiser may run in (weights and matrix math); text encoders and the VAE decoder
always run in 16-bit (MLPerf's SDXL submissions quantise the UNet only, recalled, verify)."""

ENCODER_DTYPE = "bf16"
"""Format of the text encoders and the VAE decoder (2 bytes per weight, the 16-bit peak)."""

VAE_LIVE_TENSORS = 3
"""Activation tensors of the VAE decoder's largest layer alive at once per image (estimate:
a residual block's input, its intermediate and its output); sets the workspace per image."""

ComponentRole = Literal["denoiser", "vae", "text"]


@dataclass(frozen=True)
class ImageComponent:
    """One network of the pipeline: weights (elements), multiply-accumulates per run for one
    image (one evaluation for the denoiser, one decode for the VAE, one prompt for a text
    encoder), runs per image, and where its numbers come from."""

    name: str
    role: ComponentRole
    params: int
    macs_per_run: float
    runs_per_image: int
    source: str

    @property
    def flops_per_image(self) -> float:
        """FLOPs per image: 2 x MACs x runs."""
        return 2.0 * self.macs_per_run * self.runs_per_image


@dataclass(frozen=True)
class ImageModel:
    """An image-generation pipeline at its nominal resolution and sampler: `steps` denoising
    steps of `evaluations_per_step` denoiser runs (2 with classifier-free guidance), a VAE
    decode and the text encoders, per image. FLOPs and bytes are per image unless named
    otherwise."""

    id: str
    name: str
    width_px: int
    height_px: int
    steps: int
    evaluations_per_step: int
    denoiser: ImageComponent
    vae: ImageComponent
    text_encoders: tuple[ImageComponent, ...]
    vae_workspace_bytes: float
    published_params: str
    source: str

    @property
    def denoiser_flops_per_step(self) -> float:
        """FLOPs of one denoising step for one image, all its evaluations (CFG included)."""
        return 2.0 * self.denoiser.macs_per_run * self.evaluations_per_step

    def flops_per_image(self, steps: int | None = None) -> float:
        """FLOPs to make one image with `steps` denoising steps (default: the model's)."""
        n = self.steps if steps is None else _steps(steps)
        extra = self.vae.flops_per_image + sum(t.flops_per_image for t in self.text_encoders)
        return n * self.denoiser_flops_per_step + extra

    def denoiser_weight_bytes(self, dtype: str) -> float:
        """Bytes of the denoiser's weights in `dtype` (one of `IMAGE_DTYPES`)."""
        return self.denoiser.params * BYTES_PER_ELEMENT[check_dtype(dtype)]

    def weight_bytes(self, dtype: str) -> float:
        """Bytes of all weights: the denoiser in `dtype`, text encoders and VAE in 16-bit."""
        rest = self.vae.params + sum(t.params for t in self.text_encoders)
        return self.denoiser_weight_bytes(dtype) + rest * BYTES_PER_ELEMENT[ENCODER_DTYPE]

    @property
    def params(self) -> int:
        """All weights of the pipeline that run at inference (the VAE decoder only)."""
        return self.denoiser.params + self.vae.params + sum(t.params for t in self.text_encoders)


def check_dtype(dtype: str) -> str:
    """`dtype` if the denoiser may run in it, else an InputError naming the choices."""
    if dtype not in IMAGE_DTYPES:
        raise InputError(
            f"image dtype must be one of {', '.join(IMAGE_DTYPES)}; got {dtype!r}. Use fp8 for an "
            "8-bit denoiser (INT8 runs at the same tensor rate on Hopper and Blackwell)."
        )
    return dtype


def _steps(steps: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(
            f"steps must be a whole number of denoising steps >= 1; got {steps!r}. "
            "SDXL in MLPerf uses 20, FLUX.1 [schnell] 4."
        )
    return steps


# -- counting -------------------------------------------------------------------------------------
# Each counter returns (params, MACs of one run for one image). Convolutions: k^2 x in x out
# weights and that many MACs per output pixel; linear layers: in x out; attention: QK^T and
# softmax(QK^T)V, 2 x N x M x width MACs. Biases, norms and activations are left out.


def _conv(cin: int, cout: int, pixels: int, k: int = 3) -> tuple[int, float]:
    w = k * k * cin * cout
    return w, float(w) * pixels


def _resnet(cin: int, cout: int, pixels: int, temb: int) -> tuple[int, float]:
    """A ResNet block: two 3x3 convolutions, a 1x1 shortcut when widths differ, and the projection
    of the time embedding (once per image)."""
    p1, m1 = _conv(cin, cout, pixels)
    p2, m2 = _conv(cout, cout, pixels)
    p3, m3 = _conv(cin, cout, pixels, k=1) if cin != cout else (0, 0.0)
    return p1 + p2 + p3 + temb * cout, m1 + m2 + m3 + temb * cout


def _spatial_transformer(
    width: int, depth: int, tokens: int, context_dim: int, text_tokens: int
) -> tuple[int, float]:
    """diffusers' Transformer2DModel with linear projections: proj_in, `depth` blocks of
    self-attention (Q, K, V, O), cross-attention to the text (Q and O on image tokens, K and V on
    text tokens) and a GEGLU MLP (width -> 2 x 4 width, 4 width -> width), proj_out."""
    c, n, t, d = width, tokens, text_tokens, context_dim
    block_params = 4 * c * c + (2 * c * c + 2 * d * c) + 12 * c * c
    block_macs = (
        4.0 * c * c * n + 2.0 * n * n * c  # self-attention: projections, QK^T and AV
        + 2.0 * c * c * n + 2.0 * d * c * t + 2.0 * n * t * c  # cross-attention
        + 12.0 * c * c * n  # GEGLU MLP
    )
    return 2 * c * c + depth * block_params, 2.0 * c * c * n + depth * block_macs


def _unet(cfg: Mapping[str, Any], latent_h: int, latent_w: int) -> tuple[int, float]:
    """A diffusers UNet2DConditionModel (SD/SDXL layout): conv_in, down blocks (ResNets, with
    spatial transformers in CrossAttn blocks, a stride-2 convolution between levels), a mid
    block (ResNet, transformer, ResNet), up blocks with skip concatenations (one more ResNet
    per level, nearest upsampling and a 3x3 convolution), conv_out; time and added embeddings
    once per image."""
    ch: list[int] = list(cfg["block_out_channels"])
    depth: list[int] = list(cfg["transformer_layers_per_block"])
    layers = int(cfg["layers_per_block"])
    ctx, text = int(cfg["cross_attention_dim"]), int(cfg["text_tokens"])
    down_attn = ["CrossAttn" in b for b in cfg["down_block_types"]]
    up_attn = ["CrossAttn" in b for b in cfg["up_block_types"]]
    temb = 4 * ch[0]
    params, macs = 0, 0.0

    def add(part: tuple[int, float]) -> None:
        nonlocal params, macs
        params += part[0]
        macs += part[1]

    add((ch[0] * temb + temb * temb, float(ch[0] * temb + temb * temb)))  # time embedding MLP
    extra = int(cfg.get("addition_embed_input_dim", 0))
    if extra:
        add((extra * temb + temb * temb, float(extra * temb + temb * temb)))
    pixels = latent_h * latent_w
    add(_conv(int(cfg["in_channels"]), ch[0], pixels))
    width = ch[0]
    for level, out in enumerate(ch):
        px = pixels // 4**level
        for _ in range(layers):
            add(_resnet(width, out, px, temb))
            width = out
            if down_attn[level]:
                add(_spatial_transformer(out, depth[level], px, ctx, text))
        if level < len(ch) - 1:
            add(_conv(out, out, px // 4))  # stride-2 downsampling
    px_mid = pixels // 4 ** (len(ch) - 1)
    add(_resnet(ch[-1], ch[-1], px_mid, temb))
    add(_spatial_transformer(ch[-1], depth[-1], px_mid, ctx, text))
    add(_resnet(ch[-1], ch[-1], px_mid, temb))
    rev, rev_depth = ch[::-1], depth[::-1]
    prev = ch[-1]
    for i, out in enumerate(rev):
        px = pixels // 4 ** (len(ch) - 1 - i)
        skip_in = rev[min(i + 1, len(ch) - 1)]
        for j in range(layers + 1):
            res_in = prev if j == 0 else out
            skip = skip_in if j == layers else out
            add(_resnet(res_in + skip, out, px, temb))
            if up_attn[i]:
                add(_spatial_transformer(out, rev_depth[i], px, ctx, text))
        if i < len(ch) - 1:
            add(_conv(out, out, px * 4))  # nearest upsampling, then a 3x3 convolution
        prev = out
    add(_conv(ch[0], int(cfg["out_channels"]), pixels))
    return params, macs


def _dit(cfg: Mapping[str, Any], latent_h: int, latent_w: int) -> tuple[int, float]:
    """A FLUX-style multimodal diffusion transformer (diffusers FluxTransformer2DModel):
    `num_layers` double-stream blocks (image and text tokens each through their own QKV, output
    and MLP weights, one joint attention), `num_single_layers` single-stream blocks (fused
    QKV+MLP-in linear h -> 7h, fused out linear 5h -> h), adaptive-norm modulation per image.
    Every token passes 12 h^2 MACs of linear layers per block; attention 2 N^2 h per block."""
    h = int(cfg["num_attention_heads"]) * int(cfg["attention_head_dim"])
    patch = int(cfg["patch_size"])
    n_img = (latent_h // patch) * (latent_w // patch)
    n_txt = int(cfg["text_tokens"])
    n = n_img + n_txt
    ratio = int(cfg["mlp_ratio"])
    double, single = int(cfg["num_layers"]), int(cfg["num_single_layers"])
    c_in, ctx = int(cfg["in_channels"]), int(cfg["joint_attention_dim"])
    t_dim, pooled = int(cfg["timestep_embedding_dim"]), int(cfg["pooled_projection_dim"])
    linear = (4 + 2 * ratio) * h * h  # QKV, output, MLP in and out: one stream, one token
    attention = 2.0 * n * n * h
    n_time = 1 + int(bool(cfg.get("guidance_embeds")))  # timestep (and guidance) MLPs
    per_image = (
        (t_dim * h + h * h) * n_time + (pooled * h + h * h)  # embedding MLPs
        + double * 2 * 6 * h * h  # double blocks: 6h modulation per stream
        + single * 3 * h * h  # single blocks: 3h modulation
        + 2 * h * h  # final adaptive norm
    )
    params = (
        c_in * h + ctx * h  # x_embedder, context_embedder
        + per_image
        + double * 2 * linear
        + single * linear
        + h * c_in  # proj_out
    )
    macs = (
        float(c_in * h * n_img + ctx * h * n_txt)
        + per_image
        + (double + single) * (float(linear) * n + attention)
        + float(h * c_in * n_img)
    )
    return params, macs


def _vae_decoder(cfg: Mapping[str, Any], latent_h: int, latent_w: int) -> tuple[int, float, float]:
    """The decoder of a diffusers AutoencoderKL: post-quant 1x1 convolution (if any), conv_in,
    a mid block (ResNet, single-head attention over every latent pixel, ResNet), one level per
    width (layers_per_block + 1 ResNets, upsampling but the last), conv_out to RGB. Returns
    (params, MACs, the largest activation in elements)."""
    ch: list[int] = list(cfg["block_out_channels"])
    lc = int(cfg["latent_channels"])
    layers = int(cfg["layers_per_block"]) + 1
    px = latent_h * latent_w
    params, macs = 0, 0.0
    largest = float(px * ch[-1])
    parts = []
    if cfg.get("post_quant_conv"):
        parts.append(_conv(lc, lc, px, k=1))
    parts.append(_conv(lc, ch[-1], px))
    c = ch[-1]
    parts += [_resnet(c, c, px, 0), _resnet(c, c, px, 0)]
    parts.append((4 * c * c, 4.0 * c * c * px + 2.0 * px * px * c))  # mid attention
    prev = c
    for i, out in enumerate(ch[::-1]):
        for j in range(layers):
            parts.append(_resnet(prev if j == 0 else out, out, px, 0))
        largest = max(largest, float(px * max(prev, out)))
        if i < len(ch) - 1:
            px *= 4
            parts.append(_conv(out, out, px))
            largest = max(largest, float(px * out))
        prev = out
    parts.append(_conv(ch[0], 3, px))
    for p, m in parts:
        params += p
        macs += m
    return params, macs, largest


def _text_encoder(cfg: Mapping[str, Any]) -> tuple[int, float]:
    """A transformer text encoder (CLIP text, T5 encoder): per layer Q, K, V, O (h x h each)
    and an MLP of 2 (3 if gated) h x ff matrices; token embeddings; attention over its tokens."""
    h, ff, layers = int(cfg["hidden_size"]), int(cfg["intermediate_size"]), int(cfg["layers"])
    t = int(cfg["tokens"])
    mats = 3 if cfg["gated_mlp"] else 2
    per_layer = 4 * h * h + mats * h * ff
    proj = int(cfg.get("projection_dim", 0)) * h
    params = layers * per_layer + int(cfg["vocab_size"]) * h + proj
    macs = float(layers * per_layer * t) + layers * 2.0 * t * t * h + proj
    return params, macs


# -- loading ----------------------------------------------------------------------------------------


@cache
def image_model_ids() -> tuple[str, ...]:
    """Ids of the image models shipped with megawatt, sorted."""
    root = resources.files("megawatt").joinpath(_PACKAGE_DIR)
    return tuple(sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".json")))


def load_image_model(model: str | ImageModel) -> ImageModel:
    """A packaged image model by id (`sdxl`, `flux.1-dev`, `flux.1-schnell`); an ImageModel is
    returned as is. An unknown id raises InputError listing the known ones."""
    if isinstance(model, ImageModel):
        return model
    if model not in image_model_ids():
        close = difflib.get_close_matches(str(model), image_model_ids(), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise InputError(
            f"image_model must be one of {', '.join(image_model_ids())}; got {model!r}.{hint}"
        )
    return _packaged(model)


@cache
def _packaged(model_id: str) -> ImageModel:
    text = resources.files("megawatt").joinpath(f"{_PACKAGE_DIR}/{model_id}.json").read_text()
    return image_model_from_dict(json.loads(text))


def image_model_from_dict(doc: Mapping[str, Any]) -> ImageModel:
    """An ImageModel from the JSON layout of `data/image_models/` (see its README)."""
    try:
        image, sampler, den, vae = doc["image"], doc["sampler"], doc["denoiser"], doc["vae"]
        down = int(image["latent_downsample"])
        lh, lw = int(image["height_px"]) // down, int(image["width_px"]) // down
        if den["type"] == "unet":
            d_params, d_macs = _unet(den, lh, lw)
        elif den["type"] == "dit":
            d_params, d_macs = _dit(den, lh, lw)
        else:
            raise CatalogError(f"image model {doc['id']!r}: unknown denoiser type {den['type']!r}")
        v_params, v_macs, largest = _vae_decoder(vae, lh, lw)
        prompts = int(doc["prompts_per_image"])
        encoders = []
        for enc in doc["text_encoders"]:
            p, m = _text_encoder(enc)
            encoders.append(ImageComponent(enc["name"], "text", p, m, prompts, enc["source"]))
        return ImageModel(
            id=str(doc["id"]),
            name=str(doc["name"]),
            width_px=int(image["width_px"]),
            height_px=int(image["height_px"]),
            steps=int(sampler["steps"]),
            evaluations_per_step=int(sampler["evaluations_per_step"]),
            denoiser=ImageComponent(
                f"{den['type'].upper()} denoiser", "denoiser", d_params, d_macs, 1, den["source"]
            ),
            vae=ImageComponent("VAE decoder", "vae", v_params, v_macs, 1, vae["source"]),
            text_encoders=tuple(encoders),
            vae_workspace_bytes=VAE_LIVE_TENSORS * largest * BYTES_PER_ELEMENT[ENCODER_DTYPE],
            published_params=str(den["published_params"]),
            source=f"{image['source']}; {sampler['source']}",
        )
    except KeyError as exc:
        raise CatalogError(f"image model {doc.get('id', '?')!r} lacks the key {exc}") from None
