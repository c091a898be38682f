"""tinylearn's wheel beside PyTorch (CPU) in one process: PyTorch's OpenMP runtime beside
tinylearn's own thread pool, and two BLAS libraries. Imports both in the order given, then trains each in turn, twice,
each with two threads, and checks every result against NumPy.

    python with_torch.py torch-first|tinylearn-first
"""

import sys
from pathlib import Path

import numpy as np

order = sys.argv[1]
if order not in ("torch-first", "tinylearn-first"):
    raise SystemExit(f"usage: {sys.argv[0]} torch-first|tinylearn-first")
if order == "torch-first":
    import torch
    import tinylearn as tl
else:
    import tinylearn as tl
    import torch

torch.manual_seed(1)
torch.set_num_threads(2)
x, y = tl.datasets.sine(2000, noise=0.1, seed=1)


def forward(weights, h):
    """NumPy's forward pass of a ReLU MLP from (kernel (in, out), bias) pairs."""
    h = h.astype(np.float64)
    for i, (w, b) in enumerate(weights):
        h = h @ w + b
        if i < len(weights) - 1:
            h = np.maximum(h, 0.0)
    return h


def train_torch():
    net = torch.nn.Sequential(torch.nn.Linear(1, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
                              torch.nn.Linear(64, 1))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(300):  # full batches of 2000: torch's kernels split them over its threads
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(net(xt), yt)
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = net(xt).numpy()
    layers = [m for m in net if isinstance(m, torch.nn.Linear)]
    ref = forward([(m.weight.detach().numpy().T, m.bias.detach().numpy()) for m in layers], x)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    return float(np.mean((out - y) ** 2))


def train_tinylearn():
    model = tl.Sequential([tl.layers.Dense(64, activation="relu", input_shape=(1,)),
                           tl.layers.Dense(64, activation="relu"),
                           tl.layers.Dense(1)])
    model.compile(optimizer=tl.optimizers.Adam(learning_rate=0.01), loss="mse")  # torch's rate
    model.fit(x, y, epochs=60, batch_size=256, seed=1, verbose=0)  # batches of 256: split over both cores
    out = model.predict(x, verbose=0)
    w = model.get_weights()
    np.testing.assert_allclose(out, forward(list(zip(w[::2], w[1::2])), x), rtol=1e-4, atol=1e-5)
    return float(np.mean((out - y) ** 2))


# The noise's variance is 0.01; an untrained model's error is about 0.5 (the variance of sin x).
for round_ in (1, 2):
    mse_torch, mse_tl = train_torch(), train_tinylearn()
    print(f"{order}, round {round_}: MSE torch {mse_torch:.4f}, tinylearn {mse_tl:.4f}")
    assert mse_torch < 0.03 and mse_tl < 0.03, "a model did not learn the sine"
gomp = sorted({line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines()
               if "libgomp" in line})
print(f"OpenMP runtimes in the process: {gomp}")
