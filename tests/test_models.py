import numpy as np
import pytest

from digitlab import config
from digitlab.config import ModelConfig, native_bfloat16, parse_units, resolve_precision
from digitlab.errors import DigitlabError
from digitlab.models import build_model


@pytest.mark.parametrize(
    "config",
    [
        ModelConfig(architecture="mlp", units=(4, 4)),
        ModelConfig(architecture="mlp", units=(10, 10), normalize=False),
        ModelConfig(architecture="cnn", filters=(8, 16), dense=32, dropout=0.2),
        ModelConfig(
            architecture="cnn",
            filters=(4, 8, 8),
            kernels=(5, 3, 3),
            strides=(1, 1, 1),
            convs=(1, 2, 2),
            pool=True,
            norm_from=1,
        ),
    ],
)
def test_build_model_shapes(config):
    model = build_model(config)
    assert model.input_shape == (None, 28, 28)
    assert model.output_shape == (None, 10)
    probs = np.asarray(model(np.zeros((3, 28, 28), "float32")))
    assert probs.shape == (3, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_tutorial_mlp_layers():
    model = build_model(ModelConfig(architecture="mlp", units=(4, 4)))
    dense = [layer for layer in model.layers if layer.__class__.__name__ == "Dense"]
    assert [d.units for d in dense] == [4, 4, 10]
    assert [d.activation.__name__ for d in dense] == ["relu", "relu", "softmax"]


def test_config_round_trip():
    config = ModelConfig(architecture="mlp", units=(10, 10), activation="tanh")
    assert ModelConfig.from_dict(config.to_dict()) == config
    # JSON turns tuples into lists; from_dict turns them back
    assert ModelConfig.from_dict({**config.to_dict(), "units": [10, 10]}) == config


def test_stages_convs_and_batchnorm():
    config = ModelConfig(
        architecture="cnn",
        filters=(4, 8, 8),
        kernels=(5, 3, 3),
        strides=(1, 1, 1),
        convs=(1, 2, 2),
        pool=True,
        norm_from=1,
        dense=0,
    )
    model = build_model(config)
    convs = [layer for layer in model.layers if layer.__class__.__name__ == "Conv2D"]
    assert [c.filters for c in convs] == [4, 8, 8, 8, 8]
    assert [c.use_bias for c in convs] == [True, False, False, False, False]  # BatchNorm from stage 1 on
    assert sum(layer.__class__.__name__ == "BatchNormalization" for layer in model.layers) == 4
    assert ModelConfig.from_dict({**config.to_dict(), "convs": [1, 2, 2]}) == config
    assert ModelConfig(convs=2).stage_convs() == (2, 2)


def test_standardize_centres_mnist_pixels():
    plain = build_model(ModelConfig(architecture="mlp", units=(4,)))
    standard = build_model(ModelConfig(architecture="mlp", units=(4,), standardize=True))
    x = np.array([[[0.0, 255.0]]], "float32")
    np.testing.assert_allclose(np.asarray(plain.get_layer("scale")(x)), [[[0.0, 1.0]]], atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(standard.get_layer("scale")(x)), [[[-0.1307 / 0.3081, (1 - 0.1307) / 0.3081]]], rtol=1e-5
    )


def test_bfloat16_computes_in_bfloat16_on_float32_weights_with_a_float32_softmax():
    config = ModelConfig(
        architecture="cnn", filters=(4, 8), kernels=(3, 3), strides=(1, 1), pool=True, dense=8, norm_from=1
    )
    model = build_model(config, "bfloat16")
    conv = model.get_layer("conv_0_0")
    assert conv.compute_dtype == "bfloat16" and conv.variable_dtype == "float32"
    assert model.get_layer("probabilities").compute_dtype == "float32"
    assert {v.dtype for v in model.weights} == {"float32"}
    probs = np.asarray(model(np.full((2, 28, 28), 128.0, "float32")))
    assert probs.dtype == np.float32 and probs.shape == (2, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    # the same weights in a float32 model give nearly the same probabilities
    twin = build_model(config)
    twin.set_weights(model.get_weights())
    assert twin.get_layer("conv_0_0").compute_dtype == "float32"
    np.testing.assert_allclose(np.asarray(twin(np.full((2, 28, 28), 128.0, "float32"))), probs, atol=2e-2)
    with pytest.raises(DigitlabError, match="precision: expected one of float32, bfloat16, got 'float16'"):
        build_model(config, "float16")


CPUINFO = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 avx512f {extra}\n\n"


@pytest.mark.parametrize(
    ("extra", "native"),
    [("avx512_bf16 avx512_vnni", True), ("amx_bf16 amx_tile", True), ("avx512_vnni", False), ("", False)],
)
def test_native_bfloat16_reads_the_cpu_flags(tmp_path, extra, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO.format(extra=extra))
    assert native_bfloat16(cpuinfo) is native
    assert native_bfloat16(tmp_path / "missing") is False  # no /proc/cpuinfo (macOS, Windows): float32


def test_native_bfloat16_only_under_tensorflow(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO.format(extra="avx512_bf16"))
    monkeypatch.setattr(config, "keras_backend", lambda: "jax")
    assert native_bfloat16(cpuinfo) is False


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_resolves_to_bfloat16_only_where_native(monkeypatch, native):
    monkeypatch.setattr(config, "native_bfloat16", lambda: native)
    assert resolve_precision("auto") == ("bfloat16" if native else "float32")
    assert resolve_precision("float32") == "float32" and resolve_precision("bfloat16") == "bfloat16"
    model = build_model(ModelConfig(architecture="cnn", filters=(4, 8), dense=8), "auto")
    assert model.get_layer("conv_0_0").compute_dtype == ("bfloat16" if native else "float32")


def test_config_errors():
    with pytest.raises(DigitlabError, match="unknown architecture 'resnet'"):
        ModelConfig(architecture="resnet")
    with pytest.raises(DigitlabError, match="units must be positive"):
        ModelConfig(architecture="mlp", units=(4, 0))
    with pytest.raises(DigitlabError, match="convs needs one value per stage"):
        ModelConfig(filters=(8, 16), convs=(1, 2, 2))
    with pytest.raises(DigitlabError, match="convs must be positive"):
        ModelConfig(convs=0)
    with pytest.raises(DigitlabError, match="unknown fields"):
        ModelConfig.from_dict({"architecture": "mlp", "layers": 3})
    with pytest.raises(DigitlabError, match=r"norm_from must be a stage index from 0 to 2 .*got 3"):
        ModelConfig(filters=(8, 16), kernels=(3, 3), strides=(1, 1), norm_from=3)
    with pytest.raises(DigitlabError, match="norm_from must be"):
        ModelConfig(norm_from=-1)
    with pytest.raises(DigitlabError, match=r"bn_momentum must be in \[0, 1\), got 1.5"):
        ModelConfig(bn_momentum=1.5)
    with pytest.raises(DigitlabError, match="dense must be a width >= 0"):
        ModelConfig(dense=-8)
    assert ModelConfig(norm_from=2).norm_from == 2  # BatchNorm only after the convs: allowed


def test_parse_units():
    assert parse_units("4,4") == (4, 4)
    assert parse_units("128") == (128,)
    with pytest.raises(DigitlabError, match=r"--units: expected comma-separated positive integers.*'4,x'"):
        parse_units("4,x")
    with pytest.raises(DigitlabError, match="--units: expected positive integers"):
        parse_units("4,-1")
