"""The BERT encoder (Devlin et al. 2018) in Keras 3 on the TensorFlow backend.

Layer and weight names follow google-research/bert so that :mod:`bertlib.model.checkpoints` maps them
one-to-one onto the original checkpoint names (``bert/encoder/layer_0/attention/self/query/kernel``)::

    bert/embeddings/{word_embeddings, position_embeddings, token_type_embeddings, LayerNorm}
    bert/encoder/layer_N/attention/self/{query, key, value}
    bert/encoder/layer_N/attention/output/{dense, LayerNorm}
    bert/encoder/layer_N/intermediate/dense
    bert/encoder/layer_N/output/{dense, LayerNorm}
    bert/pooler/dense

Mixed precision: under a ``mixed_float16`` / ``mixed_bfloat16`` Keras policy, matmuls and GELU run in
the low-precision compute dtype, while the attention softmax and every LayerNorm run in float32
(their layers carry a float32 policy, or the cast is explicit). Variables are always float32.

Packed rows (sequence packing, several ``[CLS] A [SEP] B [SEP]`` pairs back to back in one row):
when the inputs hold ``position_ids``, ``input_mask`` holds the 1-based pair number of every token
(0 on padding), each token takes the position embedding of its place within its own pair and
attends only to the tokens of its pair (:func:`pair_attention_bias`), so every pair is encoded as
if it were alone in its row. Without ``position_ids`` the encoder is Google's.

Shapes: ``B`` batch, ``S`` sequence length, ``H`` hidden size, ``N`` heads, ``D = H / N`` head size,
``I`` intermediate size, ``V`` vocabulary size.
"""

from __future__ import annotations

import contextlib

import keras
import tensorflow as tf

from bertlib.model.config import LAYER_NORM_EPSILON, BertConfig


def _initializer(config: BertConfig):
    return keras.initializers.TruncatedNormal(stddev=config.initializer_range)


@contextlib.contextmanager
def scope(path: str):
    """Keras name scope for a ``/``-separated path: weights created inside get ``path/.../name``.

    Every bertlib weight is created eagerly under its Google scope, so ``variable.path`` IS the
    google-research/bert checkpoint name (``bert/encoder/layer_0/attention/self/query/kernel``).
    """
    with contextlib.ExitStack() as stack:
        for part in path.split("/"):
            stack.enter_context(keras.name_scope(part))
        yield


def dense(units: int, config: BertConfig, path: str, in_dim: int, activation=None) -> keras.layers.Dense:
    """A Dense layer built at once with weights ``{path}/kernel`` [in_dim, units] and ``{path}/bias``."""
    parent, _, name = path.rpartition("/")
    layer = keras.layers.Dense(units, activation=activation, kernel_initializer=_initializer(config), name=name)
    with scope(parent):
        layer.build((None, in_dim))
    return layer


def weights(path: str, specs: dict[str, tuple[tuple[int, ...], object]]) -> keras.layers.Layer:
    """A weights-only layer named after the last part of ``path`` holding ``{path}/{name}`` weights
    for each ``name: (shape, initializer)`` of ``specs``, reachable as attributes of that name."""
    parent, _, name = path.rpartition("/")
    holder = keras.layers.Layer(name=name)
    with scope(parent):
        for key, (shape, init) in specs.items():
            setattr(holder, key, holder.add_weight(shape=shape, initializer=init, name=key))
    holder.built = True
    return holder


def layer_norm(path: str, dim: int) -> keras.layers.LayerNormalization:
    """LayerNorm with BERT's epsilon 1e-12, always computed in float32; weights ``{path}/gamma``,
    ``{path}/beta`` [dim]."""
    parent, _, name = path.rpartition("/")
    layer = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, dtype="float32", name=name)
    with scope(parent):
        layer.build((None, dim))
    return layer


def activation(name: str):
    """``gelu`` is the exact erf form used by Google's BERT; ``gelu_new`` the tanh approximation."""
    if name == "gelu":
        return lambda x: keras.activations.gelu(x, approximate=False)
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return lambda x: keras.activations.gelu(x, approximate=True)
    return keras.activations.get(name)


def attention_bias(input_mask: tf.Tensor) -> tf.Tensor:
    """``input_mask`` [B, S] (1 = real token, 0 = padding) → additive bias [B, 1, 1, S] float32:
    0 where attending is allowed and -10000 (Google's value) on padding keys."""
    mask = tf.cast(input_mask, tf.float32)[:, tf.newaxis, tf.newaxis, :]
    return (1.0 - mask) * -10000.0


def pair_attention_bias(input_mask: tf.Tensor) -> tf.Tensor:
    """``input_mask`` [B, S] of a packed row (the 1-based pair number of every token, 0 on padding) →
    additive bias [B, 1, S, S] float32: ``bias[b, 0, q, k]`` = 0 where key k is a real token of query
    q's pair (``input_mask[b, q] == input_mask[b, k] > 0``), else -10000. A padding query (pair 0)
    has every key masked (a uniform softmax that no real token reads)."""
    pair = tf.cast(input_mask, tf.int32)
    same = tf.logical_and(
        tf.equal(pair[:, :, tf.newaxis], pair[:, tf.newaxis, :]), (pair > 0)[:, tf.newaxis, :]
    )  # [B, S(q), S(k)]
    return (1.0 - tf.cast(same, tf.float32))[:, tf.newaxis, :, :] * -10000.0


class BertEmbeddings(keras.layers.Layer):
    """Word + position + token-type embeddings, LayerNorm, dropout.

    Weights (under ``prefix``, default ``bert/embeddings``): ``word_embeddings`` [V, H],
    ``position_embeddings`` [max_position_embeddings, H], ``token_type_embeddings``
    [type_vocab_size, H], ``LayerNorm/{gamma,beta}`` [H].
    """

    def __init__(self, config: BertConfig, prefix: str = "bert/embeddings", **kwargs):
        super().__init__(name=kwargs.pop("name", "embeddings"), **kwargs)
        init, h = _initializer(config), config.hidden_size
        self.tables = weights(
            prefix,
            {
                "word_embeddings": ((config.vocab_size, h), init),
                "position_embeddings": ((config.max_position_embeddings, h), init),
                "token_type_embeddings": ((config.type_vocab_size, h), init),
            },
        )
        self.layer_norm = layer_norm(f"{prefix}/LayerNorm", h)
        self.dropout = keras.layers.Dropout(config.hidden_dropout_prob)
        self.built = True

    def call(self, input_ids, segment_ids, position_ids=None, training=False):
        """``input_ids``, ``segment_ids`` [B, S] int32 and optional ``position_ids`` [B, S] int32 (default:
        0..S-1 in every row) → embeddings [B, S, H] (compute dtype)."""
        x = tf.gather(self.tables.word_embeddings, input_ids)
        x += tf.gather(self.tables.token_type_embeddings, segment_ids)
        if position_ids is None:
            x += self.tables.position_embeddings[tf.newaxis, : tf.shape(input_ids)[1], :]
        else:
            x += tf.gather(self.tables.position_embeddings, position_ids)
        x = self.layer_norm(x)  # float32
        x = self.dropout(x, training=training)
        return tf.cast(x, self.compute_dtype)


class BertSelfAttention(keras.layers.Layer):
    """Multi-head scaled dot-product self-attention with the input mask, output projection, dropout,
    residual and post-LN: ``{prefix}/self/{query,key,value}`` (Dense H→H), ``{prefix}/output/dense``
    (Dense H→H), ``{prefix}/output/LayerNorm``. The softmax runs in float32.
    """

    def __init__(self, config: BertConfig, prefix: str, **kwargs):
        super().__init__(name=kwargs.pop("name", "attention"), **kwargs)
        h = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_size = h // config.num_attention_heads
        self.query = dense(h, config, f"{prefix}/self/query", h)
        self.key = dense(h, config, f"{prefix}/self/key", h)
        self.value = dense(h, config, f"{prefix}/self/value", h)
        self.output_dense = dense(h, config, f"{prefix}/output/dense", h)
        self.output_layer_norm = layer_norm(f"{prefix}/output/LayerNorm", h)
        self.probs_dropout = keras.layers.Dropout(config.attention_probs_dropout_prob)
        self.output_dropout = keras.layers.Dropout(config.hidden_dropout_prob)
        self.built = True

    def _split_heads(self, x, batch, seq_len):
        """[B, S, H] → [B, N, S, D]."""
        x = tf.reshape(x, [batch, seq_len, self.num_heads, self.head_size])
        return tf.transpose(x, [0, 2, 1, 3])

    def call(self, x, bias, training=False):
        """``x`` [B, S, H], ``bias`` float32 [B, 1, 1, S] (:func:`attention_bias`) or [B, 1, S, S]
        (:func:`pair_attention_bias`), broadcast over heads (and queries) → [B, S, H]."""
        batch, seq_len = tf.shape(x)[0], tf.shape(x)[1]
        q = self._split_heads(self.query(x), batch, seq_len)
        k = self._split_heads(self.key(x), batch, seq_len)
        v = self._split_heads(self.value(x), batch, seq_len)
        scores = tf.matmul(q, k, transpose_b=True) * tf.cast(self.head_size**-0.5, q.dtype)  # [B,N,S,S]
        probs = tf.nn.softmax(tf.cast(scores, tf.float32) + tf.cast(bias, tf.float32), axis=-1)  # float32
        probs = self.probs_dropout(tf.cast(probs, v.dtype), training=training)
        context = tf.transpose(tf.matmul(probs, v), [0, 2, 1, 3])  # [B,S,N,D]
        context = tf.reshape(context, [batch, seq_len, self.num_heads * self.head_size])
        out = self.output_dropout(self.output_dense(context), training=training)
        return tf.cast(self.output_layer_norm(out + x), self.compute_dtype)


class BertLayer(keras.layers.Layer):
    """One post-LN transformer block under ``prefix`` (``bert/encoder/layer_N``):
    ``attention`` → ``intermediate/dense`` (H→I, GELU) → ``output/dense`` (I→H) → dropout →
    residual → ``output/LayerNorm``. [B, S, H] → [B, S, H]."""

    def __init__(self, config: BertConfig, prefix: str, **kwargs):
        super().__init__(name=kwargs.pop("name", prefix.rpartition("/")[2]), **kwargs)
        h, i = config.hidden_size, config.intermediate_size
        self.attention = BertSelfAttention(config, f"{prefix}/attention")
        self.intermediate = dense(
            i, config, f"{prefix}/intermediate/dense", h, activation=activation(config.hidden_act)
        )
        self.output_dense = dense(h, config, f"{prefix}/output/dense", i)
        self.output_layer_norm = layer_norm(f"{prefix}/output/LayerNorm", h)
        self.dropout = keras.layers.Dropout(config.hidden_dropout_prob)
        self.built = True

    def call(self, x, bias, training=False):
        """``x`` [B, S, H], ``bias`` [B, 1, 1, S] or [B, 1, S, S] (see :class:`BertSelfAttention`) → [B, S, H]."""
        x = self.attention(x, bias, training=training)
        y = self.dropout(self.output_dense(self.intermediate(x)), training=training)
        return tf.cast(self.output_layer_norm(y + x), self.compute_dtype)


class BertEncoder(keras.Model):
    """The BERT backbone.

    ``call({"input_ids", "input_mask", "segment_ids"} each [B, S] int, training=False)`` →
    ``{"sequence_output": [B, S, H], "pooled_output": [B, H]}`` in the policy's compute dtype;
    ``pooled_output`` = tanh(Dense(sequence_output[:, 0])) (the [CLS] position). ``input_mask`` and
    ``segment_ids`` default to all ones / all zeros. Packed rows add ``position_ids`` [B, S] int (the
    position within each token's pair) and carry pair numbers in ``input_mask``: attention then stays
    within each pair (:func:`pair_attention_bias`); ``pooled_output`` is still that of position 0.

    All weights exist after construction (no lazy build) and ``variable.path`` is the Google name.
    Mixed precision follows the global Keras policy at construction time
    (``keras.mixed_precision.set_global_policy("mixed_float16")`` before building the model).
    """

    def __init__(self, config: BertConfig, **kwargs):
        super().__init__(name=kwargs.pop("name", "bert"), **kwargs)
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder_layers = [BertLayer(config, f"bert/encoder/layer_{i}") for i in range(config.num_hidden_layers)]
        self.pooler = dense(config.hidden_size, config, "bert/pooler/dense", config.hidden_size, activation="tanh")
        self.built = True

    def call(self, inputs, training=False):
        input_ids = tf.cast(inputs["input_ids"], tf.int32)
        segment_ids = inputs.get("segment_ids")
        segment_ids = tf.zeros_like(input_ids) if segment_ids is None else tf.cast(segment_ids, tf.int32)
        input_mask = inputs.get("input_mask")
        position_ids = inputs.get("position_ids")
        if position_ids is None:
            bias = attention_bias(tf.ones_like(input_ids) if input_mask is None else input_mask)
        else:
            position_ids = tf.cast(position_ids, tf.int32)
            bias = pair_attention_bias(input_mask)
        x = self.embeddings(input_ids, segment_ids, position_ids, training=training)
        for layer in self.encoder_layers:
            x = layer(x, bias, training=training)
        pooled = self.pooler(x[:, 0, :])
        return {"sequence_output": x, "pooled_output": pooled}

    @property
    def word_embeddings(self):
        """The [V, H] word-embedding matrix (tied to the MLM decoder)."""
        return self.embeddings.tables.word_embeddings


def dummy_inputs(batch: int = 1, seq_len: int = 2) -> dict[str, tf.Tensor]:
    """All-zero int32 inputs of shape [batch, seq_len] (to trace or build a model)."""
    z = tf.zeros([batch, seq_len], tf.int32)
    return {"input_ids": z, "input_mask": tf.ones_like(z), "segment_ids": z}
