"""The MLPerf Tiny reference architectures, as tinylearn models (like keras.applications).

    model = tl.applications.resnet8()          # CIFAR-10 image classification, 12.5 M MACs
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])

Each function returns an unbuilt functional model with the layer structure of the MLPerf Tiny
(mlcommons/tiny) Keras reference: batch normalization after every convolution and dense layer
(folded away by tl.convert), ReLU activations, a softmax classifier.

=================  ===================  ============  =========
function           task                 input         MACs
=================  ===================  ============  =========
ds_cnn()           keyword spotting     49 x 10 x 1   2,656,768
mobilenet_v1()     visual wake words    96 x 96 x 3   7,489,664
resnet8()          image classification 32 x 32 x 3   12,501,632
fc_autoencoder()   anomaly detection    640           264,192
=================  ===================  ============  =========
"""

from __future__ import annotations

from . import layers as L
from .layers import Input
from .models import Model

__all__ = ["ds_cnn", "fc_autoencoder", "mobilenet_v1", "resnet8"]


def _bn_relu(x):
    return L.ReLU()(L.BatchNormalization()(x))


def ds_cnn(input_shape=(49, 10, 1), classes: int = 12, filters: int = 64) -> Model:
    """Depthwise-separable CNN for keyword spotting (MFCC input), MLPerf Tiny's KWS model."""
    inputs = Input(shape=input_shape)
    x = _bn_relu(L.Conv2D(filters, (10, 4), strides=2, padding="same")(inputs))
    for _ in range(4):
        x = _bn_relu(L.DepthwiseConv2D(3, padding="same")(x))
        x = _bn_relu(L.Conv2D(filters, 1, padding="same")(x))
    h, w = -(-input_shape[0] // 2), -(-input_shape[1] // 2)
    x = L.Flatten()(L.AveragePooling2D(pool_size=(h, w))(x))
    return Model(inputs, L.Dense(classes, activation="softmax")(x), name="ds_cnn")


def mobilenet_v1(input_shape=(96, 96, 3), classes: int = 2, alpha: float = 0.25) -> Model:
    """MobileNetV1 (width multiplier alpha) for visual wake words, MLPerf Tiny's VWW model."""
    inputs = Input(shape=input_shape)
    f = int(32 * alpha)
    x = _bn_relu(L.Conv2D(f, 3, strides=2, padding="same")(inputs))
    h, w = -(-input_shape[0] // 2), -(-input_shape[1] // 2)
    for stride, mult in [(1, 2), (2, 2), (1, 1), (2, 2), (1, 1), (2, 2),
                         (1, 1), (1, 1), (1, 1), (1, 1), (1, 1), (2, 2), (1, 1)]:
        x = _bn_relu(L.DepthwiseConv2D(3, strides=stride, padding="same")(x))
        h, w = -(-h // stride), -(-w // stride)
        f *= mult
        x = _bn_relu(L.Conv2D(f, 1, padding="same")(x))
    x = L.Flatten()(L.AveragePooling2D(pool_size=(h, w))(x))
    return Model(inputs, L.Dense(classes, activation="softmax")(x), name="mobilenet_v1")


def resnet8(input_shape=(32, 32, 3), classes: int = 10) -> Model:
    """ResNet-8 for CIFAR-10, MLPerf Tiny's image-classification model."""
    inputs = Input(shape=input_shape)
    x = _bn_relu(L.Conv2D(16, 3, padding="same")(inputs))
    h = input_shape[0]
    for filters, stride in [(16, 1), (32, 2), (64, 2)]:
        y = _bn_relu(L.Conv2D(filters, 3, strides=stride, padding="same")(x))
        y = L.BatchNormalization()(L.Conv2D(filters, 3, padding="same")(y))
        if stride != 1:
            x = L.Conv2D(filters, 1, strides=stride, padding="same")(x)
        x = L.ReLU()(L.Add()([x, y]))
        h = -(-h // stride)
    x = L.Flatten()(L.AveragePooling2D(pool_size=h)(x))
    return Model(inputs, L.Dense(classes, activation="softmax")(x), name="resnet8")


def fc_autoencoder(inputs: int = 640, hidden: int = 128, code: int = 8) -> Model:
    """The fully connected autoencoder for anomaly detection (MLPerf Tiny's AD model)."""
    x0 = Input(shape=(inputs,))
    x = x0
    for units in [hidden] * 4 + [code] + [hidden] * 4:
        x = _bn_relu(L.Dense(units)(x))
    return Model(x0, L.Dense(inputs)(x), name="fc_autoencoder")
