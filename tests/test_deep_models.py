"""The deep families: they learn, they use their covariates, they round-trip, their settings work."""

from __future__ import annotations

import dataclasses
import itertools
import json

import numpy as np
import pandas as pd
import pytest
import torch

from forecasting.config import ModelSpec, TrainingConfig
from forecasting.errors import ConfigError, ModelLoadError, NotFittedError
from forecasting.models.base import DataSpec, Forecaster
from forecasting.models.registry import build_model, get_model_class, parse_settings
from forecasting.models.tcn import levels_for, receptive_field

FAMILIES = ["linear", "rnn", "lstm", "gru", "tcn", "transformer"]
LAYERED = ["rnn", "lstm", "gru", "tcn", "transformer"]
L, H = 48, 24
# Small networks so that every test runs in well under a second of training per model.
TINY = {
    "linear": {},
    "rnn": {"hidden": 16, "segment_len": 8},
    "lstm": {"hidden": 16, "segment_len": 8},
    "gru": {"hidden": 16, "segment_len": 8},
    "tcn": {"hidden": 8},
    "transformer": {"hidden": 16, "heads": 2, "layers": 1},
}


def fast(**overrides) -> TrainingConfig:
    base = {"epochs": 2, "batch_size": 64, "progress": False, "seed": 0, "patience": None}
    return TrainingConfig(**{**base, **overrides})


def model(name: str, spec: DataSpec | None = None, training: TrainingConfig | None = None, **params):
    return build_model(
        ModelSpec(name=name, params={**TINY[name], **params}),
        spec or DataSpec(lookback=L, horizon=H),
        training or fast(),
    )


def split(frame: pd.DataFrame, n_test: int = 120) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Last ``n_test`` rows of every series are the test targets (test keeps L rows of history)."""
    pos = frame.groupby("series_id").cumcount()
    n = frame.groupby("series_id")["y"].transform("size")
    return frame[pos < n - n_test], frame[pos >= n - n_test - L]


def split3(
    frame: pd.DataFrame, n_val: int = 48, n_test: int = 120
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Train, validation (the ``n_val`` rows before the test) and test; val and test keep L rows
    of history, so early stopping never sees a test target."""
    rest, test = split(frame, n_test)
    train, val = split(rest, n_val)
    return train, val, test


def window_mse(m: Forecaster, test: pd.DataFrame) -> float:
    w = m.make_windows(test)
    batch = w.batch(np.arange(len(w)))
    return float(np.mean((m.predict_windows(batch) - batch["target"]) ** 2))


@pytest.mark.parametrize("name", FAMILIES)
def test_beats_naive_on_a_learnable_series(name: str, sine_frame: pd.DataFrame) -> None:
    train, val, test = split3(sine_frame)
    naive = build_model(ModelSpec(name="naive"), DataSpec(lookback=L, horizon=H)).fit(train)
    m = model(name, training=fast(epochs=20)).fit(train, val)
    mse, naive_mse = window_mse(m, test), window_mse(naive, test)
    # The noise alone scores 0.01 and naive about 2; every family gets within 0.04 of the noise.
    assert mse < 0.05, (mse, naive_mse)
    assert mse < 0.05 * naive_mse
    assert len(m.history_) == 20 and 1 <= m.best_epoch_ <= 20  # chosen on validation, not test


@pytest.mark.parametrize("name", FAMILIES)
def test_forecasts_unseen_series_and_keeps_shapes(name: str, sine_frame: pd.DataFrame) -> None:
    m = model(name)
    n_params = m.n_params  # known before fitting: sizes come from the spec
    m.fit(sine_frame)
    assert m.n_params == n_params > 0
    new = sine_frame[sine_frame["series_id"] == "s1"].assign(series_id="never-seen")
    out = m.predict(new)
    assert list(out.columns) == ["series_id", "t", "yhat"]
    assert len(out) == H and np.isfinite(out["yhat"]).all()
    batch, _, _ = m.prediction_batch(new)
    assert batch["series"].tolist() == [-1]


@pytest.mark.parametrize("name", FAMILIES)
def test_save_load_round_trip_gives_identical_forecasts(
    name: str, sine_frame: pd.DataFrame, tmp_path
) -> None:
    m = model(name).fit(sine_frame)
    before = m.predict(sine_frame)
    m.save(tmp_path / name)
    state = torch.load(tmp_path / name / "weights.pt", weights_only=True)  # plain tensors, no pickle
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    loaded = Forecaster.load(tmp_path / name)
    assert type(loaded) is type(m) and loaded.settings == m.settings
    assert loaded.name == m.name == name  # the registry name it was built under
    assert loaded.n_params == m.n_params
    assert loaded.history_ == m.history_ and loaded.best_epoch_ == m.best_epoch_
    pd.testing.assert_frame_equal(loaded.predict(sine_frame), before)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback of a machine without CUDA")
def test_a_model_trained_for_cuda_loads_and_forecasts_on_a_machine_without_one(
    sine_frame: pd.DataFrame, tmp_path
) -> None:
    """Trained on a GPU, served or scored on CPUs: loading puts the network on the CPU (training
    there would still refuse the missing device) and keeps the saved settings as they were."""
    m = model("lstm").fit(sine_frame)
    m.training = m.training.model_copy(update={"device": "cuda"})  # as a GPU run saves it
    m.save(tmp_path / "m")
    loaded = Forecaster.load(tmp_path / "m")
    assert loaded.training.device == "cuda"
    assert next(loaded.network_.parameters()).device.type == "cpu"
    pd.testing.assert_frame_equal(loaded.predict(sine_frame), m.predict(sine_frame))
    with pytest.raises(ConfigError, match="no CUDA device"):
        model("lstm", training=loaded.training).fit(sine_frame)


def test_load_names_a_missing_weights_file(sine_frame: pd.DataFrame, tmp_path) -> None:
    m = model("linear").fit(sine_frame)
    m.save(tmp_path / "m")
    (tmp_path / "m" / "weights.pt").unlink()
    with pytest.raises(ModelLoadError, match=r"weights\.pt"):
        Forecaster.load(tmp_path / "m")


@pytest.mark.parametrize("name", FAMILIES)
def test_predict_before_fit_is_a_named_error(name: str, sine_frame: pd.DataFrame) -> None:
    with pytest.raises(NotFittedError):
        model(name).predict(sine_frame)


@pytest.mark.parametrize("name", FAMILIES)
def test_instance_normalisation_is_reversed_on_the_output(name: str, sine_frame: pd.DataFrame) -> None:
    """A level shift or a change of scale of the window moves the forecast the same way."""
    m = model(name).fit(sine_frame)
    w = m.make_windows(sine_frame)
    batch = w.batch(np.arange(0, len(w), 50))
    base = m.predict_windows(batch)
    shifted = m.predict_windows({**batch, "y": batch["y"] + 10.0})
    scaled = m.predict_windows({**batch, "y": batch["y"] * 3.0})
    np.testing.assert_allclose(shifted, base + 10.0, atol=1e-3)
    np.testing.assert_allclose(scaled, base * 3.0, atol=1e-2, rtol=1e-3)


def covariate_frame(rng: np.random.Generator) -> pd.DataFrame:
    """y is driven by a future-known covariate: y_t = 2 * f_t + noise; also a past and a static one."""
    parts = []
    for k in range(2):
        n = 500
        f = rng.standard_normal(n)
        parts.append(
            pd.DataFrame(
                {
                    "series_id": f"s{k}",
                    "t": pd.date_range("2024-01-01", periods=n, freq="h"),
                    "y": 2.0 * f + 0.1 * rng.standard_normal(n),
                    "past": rng.standard_normal(n),
                    "future": f,
                    "static": float(k),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


@pytest.mark.parametrize("name", FAMILIES)
def test_uses_past_future_and_static_covariates(name: str, rng: np.random.Generator) -> None:
    frame = covariate_frame(rng)
    train, test = split(frame, n_test=100)
    spec = DataSpec(lookback=L, horizon=H, past=["past"], future=["future"], static=["static"])
    m = model(name, spec, fast(epochs=15, lr=1e-2)).fit(train)
    w = m.make_windows(test)
    batch = w.batch(np.arange(len(w)))
    assert batch["x_past"].shape[2] == 2 and batch["x_future"].shape[2] == 1
    # Knowing the future covariate, the forecast explains 95% of y's variance (4): no history could.
    assert window_mse(m, test) < 0.2
    # ...and forecasting from history (with the future values the user provides) works too.
    history = test.copy()
    history.loc[history.groupby("series_id").tail(H).index, "y"] = np.nan
    out = m.predict(history)
    assert len(out) == 2 * H and np.isfinite(out["yhat"]).all()


@pytest.mark.parametrize("name", LAYERED)
@pytest.mark.parametrize(
    "setting",
    [
        *({"activation": a} for a in ["sigmoid", "tanh", "relu", "silu", "swish", "gelu"]),
        *({"init": i} for i in ["default", "xavier", "kaiming", "orthogonal"]),
        *({"norm": n} for n in ["layer", "batch", "none"]),
        {"residual": False},
        {"dropout": 0.2, "layers": 3, "hidden": 12},
    ],
    ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()),
)
def test_architecture_settings_construct_and_train(
    name: str, setting: dict, sine_frame: pd.DataFrame
) -> None:
    params = {**setting, "heads": 2} if name == "transformer" and "hidden" in setting else setting
    m = model(name, training=fast(max_steps=2), **params).fit(sine_frame)
    for key, value in params.items():
        assert getattr(m.settings, key) == value
    assert np.isfinite(m.history_[0]["train_loss"])


def test_recurrent_init_is_orthogonal_per_gate() -> None:
    net = model("lstm").build_network().core
    w_hh = net.cells[0].weight_hh_l0.detach()  # (4D, D): input, forget, cell, output gates
    for gate in w_hh.chunk(4, dim=0):
        torch.testing.assert_close(gate @ gate.T, torch.eye(gate.shape[0]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_recurrent_names_preset_their_cell(name: str) -> None:
    """One class under three names: the name presets the cell and is the model's name."""
    m = model(name)
    assert type(m) is get_model_class("lstm") and m.settings.cell == name and m.name == name
    assert model(name, cell=name).settings == m.settings  # repeating the preset is fine
    other = "gru" if name != "gru" else "lstm"
    with pytest.raises(ConfigError, match=rf"params\.cell = '{other}' contradicts model '{name}'"):
        parse_settings(name, {"cell": other}, "test")


def test_a_saved_folder_loads_as_the_family_it_was_saved_as(sine_frame: pd.DataFrame, tmp_path) -> None:
    """model.json names the family; its preset holds on load even where the settings leave it out."""
    model("gru").fit(sine_frame).save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["family"] == "gru" and meta["settings"]["cell"] == "gru"
    del meta["settings"]["cell"]
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    loaded = Forecaster.load(tmp_path / "m")
    assert loaded.name == "gru" and loaded.settings.cell == "gru"
    meta["settings"]["cell"] = "lstm"
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="contradicts model 'gru'"):
        Forecaster.load(tmp_path / "m")


def test_unknown_setting_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"unknown key params\.widht"):
        parse_settings("lstm", {"widht": 3}, "test")


@pytest.mark.parametrize("lookback", [24, 96, 336, 720])
def test_tcn_receptive_field_covers_the_lookback(lookback: int) -> None:
    m = build_model(ModelSpec(name="tcn"), DataSpec(lookback=lookback, horizon=H))
    net = m.build_network().core
    assert net.receptive_field >= lookback
    tokens = -(-lookback // m.settings.segment_len)
    assert len(net.blocks) == levels_for(tokens, m.settings.kernel_size)
    # ...and one block fewer would not have covered it.
    assert receptive_field(m.settings.kernel_size, len(net.blocks) - 1) < tokens or len(net.blocks) == 1


def test_too_few_tcn_layers_is_a_config_error() -> None:
    m = build_model(ModelSpec(name="tcn", params={"layers": 1}), DataSpec(lookback=336, horizon=H))
    with pytest.raises(ConfigError, match="layers >= "):
        m.build_network()


@pytest.mark.parametrize(
    ("name", "params"),
    [("lstm", {"segment_len": 60}), ("tcn", {"segment_len": 60}), ("transformer", {"patch_len": 60})],
)
def test_segments_longer_than_the_lookback_are_config_errors(name: str, params: dict) -> None:
    m = build_model(ModelSpec(name=name, params=params), DataSpec(lookback=L, horizon=H))
    with pytest.raises(ConfigError, match="exceeds the lookback"):
        m.build_network()


def test_transformer_without_patching_uses_one_token_per_step() -> None:
    m = build_model(
        ModelSpec(name="transformer", params={"patching": False}), DataSpec(lookback=L, horizon=H)
    )
    assert m.build_network().core.position.pe.shape[0] == L


def test_settings_defaults_are_the_measured_recipe() -> None:
    """Segments for recurrent and convolutional families, patches for the transformer."""
    for name in ["rnn", "lstm", "gru"]:
        assert get_model_class(name).Settings().segment_len == 24
    assert get_model_class("tcn").Settings().segment_len == 8
    s = get_model_class("transformer").Settings()
    assert s.patching and (s.patch_len, s.stride) == (16, 8)
    for name in FAMILIES:
        settings = get_model_class(name).Settings()
        assert dataclasses.is_dataclass(settings) and settings.instance_norm


def test_past_covariates_are_window_normalised_future_ones_are_not():
    """A level shift in a past covariate doesn't change the forecast; one in a future covariate does."""
    import torch

    from forecasting.models.neural import WindowNetwork

    class Probe(torch.nn.Module):
        def forward(self, y, x_past, x_future, static):
            return torch.cat([x_past.sum(dim=(1, 2))[:, None], x_future.sum(dim=(1, 2))[:, None]], dim=1)

    net = WindowNetwork(Probe(), instance_norm=True, n_past_only=1)
    g = torch.Generator().manual_seed(0)
    batch = {
        "y": torch.randn(4, 8, generator=g),
        "x_past": torch.randn(4, 8, 2, generator=g),
        "x_future": torch.randn(4, 2, 1, generator=g),
        "static": torch.zeros(4, 0),
    }
    base = net(batch)
    shifted = dict(batch, x_past=batch["x_past"] + torch.tensor([5.0, 0.0]))
    torch.testing.assert_close(net(shifted), base, atol=1e-4, rtol=1e-4)
    moved = dict(batch, x_past=batch["x_past"] + torch.tensor([0.0, 5.0]))
    assert not torch.allclose(net(moved)[:, 0], base[:, 0])


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_segment_decoder_learns_and_round_trips(name: str, sine_frame: pd.DataFrame, tmp_path) -> None:
    """SegRNN's parallel decoder: one recurrent step per horizon segment from the encoder state."""
    train, val, test = split3(sine_frame)
    naive = build_model(ModelSpec(name="naive"), DataSpec(lookback=L, horizon=H)).fit(train)
    m = model(name, training=fast(epochs=15), decoder="segments").fit(train, val)
    assert m.network_.core.position.shape == (H // 8, 16)  # 3 output segments of 8 steps
    assert window_mse(m, test) < 0.05 * window_mse(naive, test)
    m.save(tmp_path / name)
    pd.testing.assert_frame_equal(Forecaster.load(tmp_path / name).predict(test), m.predict(test))


def test_segment_decoder_cuts_a_ragged_horizon_and_reads_future_covariates(sine_frame: pd.DataFrame) -> None:
    frame = sine_frame.assign(hour=sine_frame["t"].dt.hour.astype(float))
    spec = DataSpec(lookback=L, horizon=H, future=["hour"])
    m = model("gru", spec, decoder="segments", segment_len=10).fit(frame)  # 24 = 10 + 10 + 4
    assert m.network_.core.position.shape[0] == 3
    w = m.make_windows(frame)
    batch = w.batch(np.arange(8))
    out = m.predict_windows(batch)
    assert out.shape == (8, H) and np.isfinite(out).all()
    shifted = {**batch, "x_future": batch["x_future"] + 5.0}
    assert not np.allclose(m.predict_windows(shifted), out)  # the horizon's covariates are used


def test_segment_decoder_keeps_its_own_batch_norm_statistics(sine_frame: pd.DataFrame) -> None:
    """With norm=batch the decoder's states get their own running statistics, not the encoder's."""
    m = model("lstm", norm="batch", decoder="segments").fit(sine_frame)
    core = m.network_.core
    enc, dec = core.norms[0], core.decoder_norms[0]
    assert enc is not dec and len(core.decoder_norms) == len(core.norms)
    seen = [n for n in (enc, dec) if int(n.num_batches_tracked) > 0]
    assert len(seen) == 2  # both were updated in training...
    assert not torch.allclose(enc.running_mean, dec.running_mean)  # ...from different states


def test_end_padding_repeats_the_last_step_as_one_more_patch() -> None:
    from forecasting.models.layers import n_patches, to_patches

    x = torch.arange(2 * 48, dtype=torch.float32).reshape(2, 48, 1)  # (B, L, C)
    plain, padded = to_patches(x, 16, 8), to_patches(x, 16, 8, pad_end=True)
    assert plain.shape == (2, n_patches(48, 16, 8), 16) == (2, 5, 16)
    assert padded.shape == (2, n_patches(48 + 8, 16, 8), 16) == (2, 6, 16)
    torch.testing.assert_close(padded[:, :5], plain)  # the first patches are unchanged
    last = padded[0, -1]  # steps 40..47, then step 47 held for 8 more
    torch.testing.assert_close(last, torch.tensor([*range(40, 48), *[47] * 8], dtype=torch.float32))


def test_residual_attention_is_multihead_attention_plus_the_previous_scores() -> None:
    from forecasting.models.transformer import ResidualAttention

    torch.manual_seed(0)
    res, mha = ResidualAttention(16, 4, 0.0), torch.nn.MultiheadAttention(16, 4, batch_first=True)
    with torch.no_grad():  # the same projections
        res.qkv.weight.copy_(mha.in_proj_weight)
        res.qkv.bias.copy_(mha.in_proj_bias)
        res.out.weight.copy_(mha.out_proj.weight)
        res.out.bias.copy_(mha.out_proj.bias)
    h = torch.randn(3, 7, 16)  # (B, N, D)
    out, scores = res(h, None)
    torch.testing.assert_close(out, mha(h, h, h, need_weights=False)[0], atol=1e-5, rtol=1e-5)
    assert scores.shape == (3, 4, 7, 7)
    # The weights it averages with are softmax(scores); a second layer adds these scores to its own.
    _, avg = mha(h, h, h, need_weights=True, average_attn_weights=True)
    torch.testing.assert_close(scores.softmax(-1).mean(1), avg, atol=1e-5, rtol=1e-5)
    prev = torch.randn(3, 4, 7, 7)
    out_prev, carried = res(h, prev)
    torch.testing.assert_close(carried, scores + prev)
    # prev enters the softmax: the same as torch's attention with prev as an additive float mask.
    masked = mha(h, h, h, attn_mask=prev.reshape(3 * 4, 7, 7), need_weights=False)[0]
    torch.testing.assert_close(out_prev, masked, atol=1e-5, rtol=1e-5)


def test_residual_attention_hands_each_layer_the_previous_layers_scores() -> None:
    net = model("transformer", layers=3, residual_attention=True).build_network().core.eval()
    seen: list[tuple] = []  # (prev received, scores returned) per block, in order
    for block in net.blocks:
        block.attn.register_forward_hook(lambda mod, args, out: seen.append((args[1], out[1])))
    y = torch.randn(2, L)
    net(y, torch.zeros(2, L, 0), torch.zeros(2, H, 0), torch.zeros(2, 0))
    assert len(seen) == 3 and seen[0][0] is None
    for (_, returned), (received, _) in itertools.pairwise(seen):
        assert received is returned


def test_patchtst_details_learn_and_round_trip(sine_frame: pd.DataFrame, tmp_path) -> None:
    """Learned positions, end padding, residual attention, BatchNorm, no attention/head dropout."""
    details = {
        "position": "learned",
        "pad_end": True,
        "residual_attention": True,
        "norm": "batch",
        "attention_dropout": 0.0,
        "head_dropout": 0.0,
        "dropout": 0.2,
        "layers": 2,
        "patch_len": 8,
        "stride": 4,
    }
    train, val, test = split3(sine_frame)
    naive = build_model(ModelSpec(name="naive"), DataSpec(lookback=L, horizon=H)).fit(train)
    m = model("transformer", training=fast(epochs=10), **details).fit(train, val)
    net = m.network_.core
    tokens = (L + 4 - 8) // 4 + 1  # 12 patches with the end one
    assert net.position.pe.shape == (tokens, 16) and net.position.pe.requires_grad
    assert net.position.pe.abs().max() > 0.02  # trained away from its +-0.02 start
    assert net.head.proj.in_features == tokens * 16 and net.head.dropout.p == 0.0
    assert all(b.attn.dropout.p == 0.0 and b.dropout.p == 0.2 for b in net.blocks)
    assert window_mse(m, test) < 0.1 * window_mse(naive, test)
    m.save(tmp_path / "t")
    loaded = Forecaster.load(tmp_path / "t")
    assert loaded.settings == m.settings
    pd.testing.assert_frame_equal(loaded.predict(test), m.predict(test))


def test_transformer_dropouts_default_to_the_shared_one() -> None:
    net = model("transformer", dropout=0.25).build_network().core
    assert net.head.dropout.p == 0.25 and net.blocks[0].attn.dropout == 0.25  # nn.MultiheadAttention's float


def test_models_trained_at_once_in_threads_are_the_models_trained_alone(sine_frame: pd.DataFrame) -> None:
    """Torch draws initial weights and dropout masks from one generator per process, and the
    training fan-out trains models in threads: a seed must give the same model beside others as
    alone (two transformers with dropout and an LSTM without, trained together)."""
    from concurrent.futures import ThreadPoolExecutor

    makers = [
        lambda: model("transformer", training=fast(epochs=3)),
        lambda: model("transformer", training=fast(epochs=3, seed=1)),
        lambda: model("lstm", training=fast(epochs=3)),
        lambda: model("transformer", training=fast(epochs=3)),
    ]

    def fit_predict(make) -> pd.DataFrame:
        return make().fit(sine_frame).predict(sine_frame)

    alone = [fit_predict(make) for make in makers]
    pd.testing.assert_frame_equal(alone[0], alone[3])
    assert not alone[0]["yhat"].equals(alone[1]["yhat"])  # the seed matters
    for _ in range(2):
        with ThreadPoolExecutor(len(makers)) as pool:
            together = list(pool.map(fit_predict, makers))
        for a, b in zip(alone, together, strict=True):
            pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize(
    ("name", "params", "draws"),
    [
        ("transformer", {}, True),  # dropout 0.3
        ("transformer", {"dropout": 0.0}, False),
        ("lstm", {}, False),
        ("lstm", {"dropout": 0.2}, True),
        ("tcn", {}, False),
        ("linear", {}, False),
    ],
)
def test_which_networks_draw_random_numbers_in_training(name: str, params: dict, draws: bool) -> None:
    from forecasting.training.randomness import draws_in_training

    assert draws_in_training(model(name, **params).build_network()) is draws


def test_loading_a_model_beside_a_training_one_leaves_its_numbers_alone(
    sine_frame: pd.DataFrame, tmp_path
) -> None:
    """Each model is loaded back to be logged to MLflow while others train: building the loaded
    network (random weights, replaced by the saved ones) must not take a training network's
    dropout masks."""
    import threading

    model("lstm").fit(sine_frame).save(tmp_path / "lstm")
    expected = model("transformer", training=fast(epochs=3)).fit(sine_frame).predict(sine_frame)
    done = threading.Event()

    def load_until_done() -> int:
        n = 0
        while not done.is_set():
            Forecaster.load(tmp_path / "lstm")
            n += 1
        return n

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        loads = pool.submit(load_until_done)
        try:
            got = model("transformer", training=fast(epochs=3)).fit(sine_frame).predict(sine_frame)
        finally:
            done.set()
        assert loads.result() > 0
    pd.testing.assert_frame_equal(got, expected)


def test_a_model_trains_start_to_end_while_a_dropout_model_trains(sine_frame: pd.DataFrame) -> None:
    """A network with dropout takes torch's generator only for each forward pass (its own stream
    swapped in), not for its whole training: another model can seed, build and train meanwhile,
    and both come out as they do alone."""
    import threading

    expected_lstm = model("lstm").fit(sine_frame).predict(sine_frame)
    expected = model("transformer", training=fast(epochs=3)).fit(sine_frame).predict(sine_frame)
    beside: dict[str, pd.DataFrame] = {}
    done = threading.Event()

    def other() -> None:
        beside["lstm"] = model("lstm").fit(sine_frame).predict(sine_frame)
        done.set()

    def after_epoch(epoch: int, metrics: dict[str, float]) -> None:
        if epoch == 1:  # the transformer is mid-training: the LSTM starts and must finish
            threading.Thread(target=other, daemon=True).start()
            assert done.wait(120), "the LSTM could not start while the transformer trained"

    got = model("transformer", training=fast(epochs=3)).fit(sine_frame, callbacks=[after_epoch])
    pd.testing.assert_frame_equal(got.predict(sine_frame), expected)
    pd.testing.assert_frame_equal(beside["lstm"], expected_lstm)
