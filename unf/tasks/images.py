"""Image tasks on the embedded 8x8 digits: an MLP, small CNNs (a pooled or a flattened head) and a residual CNN, each
with a held-out split (a fifth of the images, never trained on: ``sample_valid_batch``)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from hetnet import data, validation
from unf import spec as spec_lib
from unf.tasks.base import Task

_dense_init = jax.nn.initializers.lecun_normal()


@functools.lru_cache(maxsize=2)
def _digits(split: str = "train"):
    train, valid = data.digits()
    chosen = train if split == "train" else valid
    return jnp.asarray(chosen.images), jnp.asarray(chosen.labels)


def _sampler(batch: int, flatten: bool, split: str = "train"):
    images, labels = _digits(split)

    def sample(key):
        idx = jax.random.randint(key, (batch,), 0, labels.shape[0])
        x = images[idx]
        x = x.reshape(batch, -1) if flatten else x[..., None]
        return {"x": x, "y": labels[idx]}

    return sample


def _cross_entropy(logits, y):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


@functools.lru_cache(maxsize=32)
def mlp_digits(width: int = 32, depth: int = 2, batch: int = 64) -> Task:
    """An MLP ``64 -> width x depth -> 10`` with ReLU on the digits."""
    sizes = (64,) + (width,) * depth + (10,)

    def init(key):
        keys = jax.random.split(key, len(sizes) - 1)
        return [{"w": _dense_init(k, (a, b)), "b": jnp.zeros((b,))} for k, a, b in zip(keys, sizes[:-1], sizes[1:])]

    def loss(params, batch_):
        h = batch_["x"]
        for i, layer in enumerate(params):
            h = h @ layer["w"] + layer["b"][None]
            if i < len(params) - 1:
                h = jax.nn.relu(h)
        return _cross_entropy(h, batch_["y"])

    example = jax.eval_shape(init, jax.random.key(0))
    spec = spec_lib.mlp(example, input_label="input", output_label="output")
    return Task("mlp_digits", (("width", width), ("depth", depth), ("batch", batch)), init, loss,
                _sampler(batch, True), spec, _sampler(batch, True, "valid"))


HEADS = ("pool", "flatten")


@functools.lru_cache(maxsize=32)
def cnn_digits(channels: int = 8, batch: int = 64, head: str = "pool") -> Task:
    """A CNN on the digits. ``head="pool"``: two 3x3 conv layers of ``channels`` (ReLU), global mean pooling and a
    dense layer to 10 classes. ``head="flatten"``: the Flax tutorial's CNN scaled to the 8x8 images, 3x3 convs of
    ``channels`` then ``2 * channels``, each followed by ReLU and 2x2 mean pooling, the 2x2 feature map flattened
    into a dense layer of ``8 * channels`` units (ReLU) and one to 10 classes."""
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}.")
    second = channels if head == "pool" else 2 * channels
    conv = [((3, 3, 1, channels), channels), ((3, 3, channels, second), second)]
    # The flattened head reads the 2x2 map left after two 2x2 poolings of the 8x8 images.
    dense = [((channels, 10), 10)] if head == "pool" else [((2 * 2 * second, 8 * channels), 8 * channels),
                                                             ((8 * channels, 10), 10)]
    shapes = conv + dense
    n_conv = len(conv)

    def init(key):
        keys = jax.random.split(key, len(shapes))
        return [{"w": _dense_init(k, s) if len(s) == 2 else jax.nn.initializers.lecun_normal(
            in_axis=(0, 1, 2), out_axis=3)(k, s), "b": jnp.zeros((b,))} for k, (s, b) in zip(keys, shapes)]

    def loss(params, batch_):
        h = batch_["x"]
        for layer in params[:n_conv]:
            h = jax.lax.conv_general_dilated(h, layer["w"], (1, 1), "SAME",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
            h = jax.nn.relu(h + layer["b"][None, None, None])
            if head == "flatten":
                n, height, width, c = h.shape
                h = h.reshape(n, height // 2, 2, width // 2, 2, c).mean(axis=(2, 4))
        h = jnp.mean(h, axis=(1, 2)) if head == "pool" else h.reshape(h.shape[0], -1)
        for layer in params[n_conv:-1]:
            h = jax.nn.relu(h @ layer["w"] + layer["b"][None])
        return _cross_entropy(h @ params[-1]["w"] + params[-1]["b"][None], batch_["y"])

    example = jax.eval_shape(init, jax.random.key(0))
    spec = spec_lib.cnn(example, input_label="input", output_label="output")
    config = (("channels", channels), ("batch", batch)) + ((("head", head),) if head != "pool" else ())
    return Task("cnn_digits", config, init, loss, _sampler(batch, False), spec, _sampler(batch, False, "valid"))


def _batch_norm(h, scale, bias):
    """Normalises ``h: [batch, height, width, c]`` by its batch statistics per channel (BatchNorm in training mode,
    also at evaluation: the task keeps no running averages)."""
    mean = jnp.mean(h, axis=(0, 1, 2), keepdims=True)
    var = jnp.mean(jnp.square(h - mean), axis=(0, 1, 2), keepdims=True)
    return (h - mean) * jax.lax.rsqrt(var + 1e-5) * scale[None, None, None] + bias[None, None, None]


def _conv(h, kernel, stride: int = 1):
    return jax.lax.conv_general_dilated(h, kernel, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


@functools.lru_cache(maxsize=32)
def resnet_digits(channels: int = 8, blocks: int = 2, batch: int = 64) -> Task:
    """A residual CNN on the digits in the Flax imagenet example's form: a 3x3 stem conv of ``channels`` with
    BatchNorm, then two stages of ``blocks`` residual blocks (two 3x3 convs with BatchNorm each, identity shortcuts;
    the second stage doubles the channels and halves the map, its first block through a 1x1 projection shortcut),
    global mean pooling and a dense layer to 10 classes. Its spec is read off the loss by :func:`unf.spec.infer`
    (each stage's residual stream one group, each block's inner channels another)."""
    for name, value in (("channels", channels), ("blocks", blocks), ("batch", batch)):
        validation.positive_int(name, value)
    conv_init = jax.nn.initializers.lecun_normal(in_axis=(0, 1, 2), out_axis=3)

    def norm(c):
        return {"scale": jnp.ones((c,)), "bias": jnp.zeros((c,))}

    def init(key):
        keys = iter(jax.random.split(key, 4 * blocks + 4))
        params = {"stem": {"kernel": conv_init(next(keys), (3, 3, 1, channels)), "norm": norm(channels)}}
        for stage, c in enumerate((channels, 2 * channels)):
            for b in range(blocks):
                c_in = channels if stage == 1 and b == 0 else c
                block = {"conv_0": conv_init(next(keys), (3, 3, c_in, c)), "norm_0": norm(c),
                         "conv_1": conv_init(next(keys), (3, 3, c, c)), "norm_1": norm(c)}
                if c_in != c:
                    block["proj"] = conv_init(next(keys), (1, 1, c_in, c))
                    block["norm_proj"] = norm(c)
                params[f"stage_{stage}_block_{b}"] = block
        params["head"] = {"w": _dense_init(next(keys), (2 * channels, 10)), "b": jnp.zeros((10,))}
        return params

    def loss(params, batch_):
        stem = params["stem"]
        h = jax.nn.relu(_batch_norm(_conv(batch_["x"], stem["kernel"]), **stem["norm"]))
        for stage in range(2):
            for b in range(blocks):
                p = params[f"stage_{stage}_block_{b}"]
                stride = 2 if stage == 1 and b == 0 else 1
                y = jax.nn.relu(_batch_norm(_conv(h, p["conv_0"], stride), **p["norm_0"]))
                y = _batch_norm(_conv(y, p["conv_1"]), **p["norm_1"])
                shortcut = _batch_norm(_conv(h, p["proj"], stride), **p["norm_proj"]) if "proj" in p else h
                h = jax.nn.relu(shortcut + y)
        logits = jnp.mean(h, axis=(1, 2)) @ params["head"]["w"] + params["head"]["b"][None]
        return _cross_entropy(logits, batch_["y"])

    sample = _sampler(batch, False)
    spec = spec_lib.infer(loss, jax.eval_shape(init, jax.random.key(0)), jax.eval_shape(sample, jax.random.key(0)))
    return Task("resnet_digits", (("channels", channels), ("blocks", blocks), ("batch", batch)), init, loss, sample,
                spec, _sampler(batch, False, "valid"))
