import numpy as np
import pytest

import tinylearn as tl

SEED = 1


@pytest.fixture(scope="session")
def sine_split():
    """The course's setup: 1000 samples, 60/20/20 split."""
    x, y = tl.datasets.sine(1000, noise=0.1, seed=SEED)
    return {"train": (x[:600], y[:600]), "val": (x[600:800], y[600:800]), "test": (x[800:], y[800:])}


def sine_model():
    return tl.Sequential([tl.layers.Dense(16, activation="relu", input_shape=(1,)),
                          tl.layers.Dense(16, activation="relu"),
                          tl.layers.Dense(1)])


@pytest.fixture(scope="session")
def trained_sine(sine_split):
    model = sine_model()
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    history = model.fit(*sine_split["train"], epochs=500, batch_size=64,
                        validation_data=sine_split["val"], seed=SEED, verbose=0)
    return model, history


@pytest.fixture(scope="session")
def sine_int8(trained_sine, sine_split):
    model, _ = trained_sine
    return tl.convert(model, representative_data=sine_split["train"][0])


@pytest.fixture(scope="session")
def sine_firmware(sine_int8, tmp_path_factory):
    return tl.deploy.build_firmware(sine_int8, board="netduinoplus2",
                                    out_dir=tmp_path_factory.mktemp("fw"))


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
