"""Image models as data: parameters and FLOPs counted from the architecture match hand counts
and the published sizes; bad ids, steps and dtypes are one-line InputErrors."""

from __future__ import annotations

import pytest

from megawatt.errors import InputError
from megawatt.model import image_model_ids, load_image_model


def test_the_packaged_image_models() -> None:
    assert image_model_ids() == ("flux.1-dev", "flux.1-schnell", "sdxl")
    for mid in image_model_ids():
        m = load_image_model(mid)
        assert m.id == mid and m.source
        assert all(c.source for c in (m.denoiser, m.vae, *m.text_encoders))


# -- FLUX.1 [dev]: h = 24 x 128 = 3072, 19 double + 38 single blocks, 4096 image + 512 text tokens
def test_flux_dev_flops_per_step_equal_a_hand_count() -> None:
    m = load_image_model("flux.1-dev")
    h, n_img, n_txt = 3072, (128 // 2) ** 2, 512
    n = n_img + n_txt
    assert n_img == 4096
    per_token = 12 * h * h  # QKV 3h^2 + out h^2 + MLP 8h^2 (double: one stream; single: 7h + 5h)
    attention = 2 * n * n * h  # QK^T and AV over all heads
    blocks = 57 * (per_token * n + attention)
    embed = 64 * h * n_img + 4096 * h * n_txt + h * 64 * n_img  # x, context embedders; proj_out
    per_image = (
        2 * (256 * h + h * h) + (768 * h + h * h)  # timestep and guidance MLPs, pooled text MLP
        + 19 * 2 * 6 * h * h + 38 * 3 * h * h + 2 * h * h  # modulations, final norm
    )
    macs = blocks + embed + per_image
    assert m.denoiser.macs_per_run == macs
    assert m.evaluations_per_step == 1  # guidance-distilled: no CFG pass
    assert m.denoiser_flops_per_step == 2 * macs == pytest.approx(74.38e12, rel=1e-3)


def test_counted_parameters_match_the_published_sizes() -> None:
    sdxl, dev = load_image_model("sdxl"), load_image_model("flux.1-dev")
    assert sdxl.denoiser.params == pytest.approx(2.567e9, rel=0.005)  # SDXL paper: 2.6B
    assert dev.denoiser.params == pytest.approx(11.9e9, rel=0.005)  # model card: 12B
    clip_l, big_g = sdxl.text_encoders
    assert clip_l.params == pytest.approx(123e6, rel=0.01)
    assert clip_l.params + big_g.params == pytest.approx(817e6, rel=0.01)  # SDXL paper: 817M
    assert dev.text_encoders[0].params == pytest.approx(4.76e9, rel=0.01)  # T5-XXL encoder
    assert sdxl.vae.params == pytest.approx(49.5e6, rel=0.01)  # the decoder of the 84M VAE


def test_sdxl_flops_per_image_and_weight_bytes() -> None:
    m = load_image_model("sdxl")
    assert m.evaluations_per_step == 2 and m.steps == 20
    step = m.denoiser_flops_per_step
    assert step == 2 * 2 * m.denoiser.macs_per_run  # CFG: 2 evaluations per step
    assert m.flops_per_image(40) - m.flops_per_image(20) == pytest.approx(20 * step)
    assert m.flops_per_image() == pytest.approx(281e12, rel=0.01)
    assert m.denoiser_weight_bytes("fp8") == m.denoiser.params
    assert m.denoiser_weight_bytes("bf16") == 2 * m.denoiser.params
    assert m.weight_bytes("fp8") - m.denoiser_weight_bytes("fp8") == 2 * (m.params - m.denoiser.params)


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda: load_image_model("sdxl-turbo"), "image_model must be one of"),
        (lambda: load_image_model("sdx1"), "Did you mean 'sdxl'"),
        (lambda: load_image_model("sdxl").flops_per_image(-1), "steps must be"),
        (lambda: load_image_model("sdxl").flops_per_image(0), "steps must be"),
        (lambda: load_image_model("sdxl").weight_bytes("int4"), "image dtype must be one of"),
    ],
)
def test_bad_inputs_are_one_line_input_errors(call: object, needle: str) -> None:
    with pytest.raises(InputError, match=needle) as err:
        call()  # type: ignore[operator]
    assert "\n" not in str(err.value)
