"""needle's attention modules (hw4's Transformer extension): MultiHeadAttention, AttentionLayer,
TransformerLayer and Transformer.

needle's conventions: attention inputs are (batch, heads, len, dim_head); layers take (batch, len,
features) (Transformer: (len, batch, features) unless batch_first); the causal mask adds
-(float32's largest value) to every score above the diagonal offset `keys - queries + 1` before
the softmax (a query attends to the keys up to its own position, counted from the end), so a
fully masked row is uniform rather than PyTorch's NaN; the softmax subtracts each row's maximum
(which carries no gradient); dropout applies to the attention probabilities. Linear layers are
needle's (weight (in, out), Kaiming-uniform), created in the order listed on each class, which is
the order of the random draws."""
import math

import numpy as np

from .. import init, ops
from ..tensor import Tensor
from .layers import Dropout, LayerNorm1d, Linear, expand_reduced
from .module import Module, Sequential, check_sizes
from .sequence import Embedding, _check_shape


def softmax(logits):
    """exp(x - max) / sum(exp(x - max)) over the last axis; the max is a constant (needle's)."""
    last = logits.ndim - 1
    shifted = ops.exp(logits - expand_reduced(logits.max((last,)).detach(), logits.shape, last))
    return shifted / expand_reduced(shifted.sum((last,)), logits.shape, last)


def causal_mask(queries, keys, dtype="float32"):
    """(1, 1, queries, keys): -(float32 max) where key j > query i + keys - queries, else 0."""
    above = np.triu(np.ones((1, 1, queries, keys), np.float32), keys - queries + 1)
    return Tensor(-np.finfo(np.float32).max * above, dtype=dtype, requires_grad=False)


class MultiHeadAttention(Module):
    """softmax(q @ k^T / sqrt(dim_head) + mask) @ v, per batch and head; no parameters.

    forward(q, k, v), each (batch, heads, len, dim) (k and v of one length; v's dim may differ)
    -> (result (batch, heads, q_len, v_dim), probs (batch, heads, q_len, k_len), after dropout)."""

    def __init__(self, *, dropout=0.0, causal=False, device=None, dtype="float32"):
        super().__init__()
        self.causal, self.device, self.dtype = causal, device, dtype
        self.dropout = Dropout(dropout)

    def forward(self, q, k, v):
        _check_shape(self, "q", q, (None, None, None, None))
        batch, heads, queries, dim = q.shape
        _check_shape(self, "k", k, (batch, heads, None, dim))
        _check_shape(self, "v", v, (batch, heads, k.shape[2], None))
        scores = q @ ops.transpose(k) / math.sqrt(dim)
        if self.causal:
            scores = scores + causal_mask(queries, k.shape[2], scores.dtype).broadcast_to(scores.shape)
        probs = self.dropout(softmax(scores))
        return probs @ v, probs

    def __repr__(self):
        return f"MultiHeadAttention(dropout={self.dropout.p}, causal={self.causal})"


def _split_heads(x, heads):
    """(batch, len, heads * dim) -> (batch, heads, len, dim)."""
    batch, length, width = x.shape
    return x.reshape((batch, length, heads, width // heads)).permute((0, 2, 1, 3))


def _merge_heads(x):
    """(batch, heads, len, dim) -> (batch, len, heads * dim)."""
    batch, heads, length, dim = x.shape
    return x.permute((0, 2, 1, 3)).reshape((batch, length, heads * dim))


class AttentionLayer(Module):
    """Pre-norm multi-head attention of (batch, len, features) inputs: LayerNorm1d of q, k, v, their
    projections to num_head * dim_head (Linear without bias), MultiHeadAttention, and the output
    projection to out_features (default q_features). k and v default to q (self-attention).

    Created in this order: prenorm_q, prenorm_k, prenorm_v, q_projection, k_projection,
    v_projection, attn, out_projection."""

    def __init__(self, q_features, num_head, dim_head, *, k_features=None, v_features=None,
                 out_features=None, dropout=0.0, causal=True, device=None, dtype="float32"):
        super().__init__()
        check_sizes("AttentionLayer", num_head=num_head, dim_head=dim_head)
        k_features = q_features if k_features is None else k_features
        v_features = q_features if v_features is None else v_features
        out_features = q_features if out_features is None else out_features
        self.q_features, self.k_features, self.v_features = q_features, k_features, v_features
        self.out_features, self.num_head, self.dim_head = out_features, num_head, dim_head
        kw = {"device": device, "dtype": dtype}
        self.prenorm_q = LayerNorm1d(q_features, **kw)
        self.prenorm_k = LayerNorm1d(k_features, **kw)
        self.prenorm_v = LayerNorm1d(v_features, **kw)
        inner = num_head * dim_head
        self.q_projection = Linear(q_features, inner, bias=False, **kw)
        self.k_projection = Linear(k_features, inner, bias=False, **kw)
        self.v_projection = Linear(v_features, inner, bias=False, **kw)
        self.attn = MultiHeadAttention(dropout=dropout, causal=causal, **kw)
        self.out_projection = Linear(inner, out_features, bias=False, **kw)

    def forward(self, q, k=None, v=None):
        """q (batch, q_len, q_features), k (batch, kv_len, k_features), v (batch, kv_len,
        v_features) -> (batch, q_len, out_features)."""
        k = q if k is None else k
        v = q if v is None else v
        _check_shape(self, "q", q, (None, None, self.q_features))
        _check_shape(self, "k", k, (q.shape[0], None, self.k_features))
        _check_shape(self, "v", v, (q.shape[0], k.shape[1], self.v_features))
        heads = [_split_heads(project(norm(x)), self.num_head) for x, norm, project in (
            (q, self.prenorm_q, self.q_projection), (k, self.prenorm_k, self.k_projection),
            (v, self.prenorm_v, self.v_projection))]
        result, _ = self.attn(*heads)
        return self.out_projection(_merge_heads(result))

    def __repr__(self):
        return f"AttentionLayer({self.q_features}, num_head={self.num_head}, dim_head={self.dim_head})"


class TransformerLayer(Module):
    """A pre-norm Transformer block on (batch, len, q_features):
    x = x + dropout(attention(x)); x = x + dropout(linear2(dropout(relu(linear1(layernorm(x)))))).

    Created in this order: attention (AttentionLayer), layernorm, linear1 (q_features ->
    hidden_size), linear2 (hidden_size -> q_features), dropout."""

    def __init__(self, q_features, num_head, dim_head, hidden_size, *, dropout=0.0, causal=True,
                 device=None, dtype="float32"):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.q_features = q_features
        self.attention = AttentionLayer(q_features, num_head, dim_head, dropout=dropout,
                                        causal=causal, **kw)
        self.layernorm = LayerNorm1d(q_features, **kw)
        self.linear1 = Linear(q_features, hidden_size, **kw)
        self.linear2 = Linear(hidden_size, q_features, **kw)
        self.dropout = Dropout(dropout)

    def forward(self, x):
        x = x + self.dropout(self.attention(x))
        hidden = self.dropout(ops.relu(self.linear1(self.layernorm(x))))
        return x + self.dropout(self.linear2(hidden))

    def __repr__(self):
        return f"TransformerLayer({self.q_features})"


class Transformer(Module):
    """A learned positional embedding (Embedding(sequence_len, embedding_size), drawn first) added
    to the input, then num_layers TransformerLayers. forward(x, h=None) -> (x, zeros_like(x)),
    the second for the interface of RNN/LSTM language models. x is (len, batch, embedding_size),
    or (batch, len, embedding_size) with batch_first; len must not exceed sequence_len."""

    def __init__(self, embedding_size, hidden_size, num_layers, *, num_head=8, dim_head=32,
                 dropout=0.0, causal=True, device=None, dtype="float32", batch_first=False,
                 sequence_len=2048):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.embedding_size, self.batch_first, self.sequence_len = embedding_size, batch_first, sequence_len
        self.positional_embedding = Embedding(sequence_len, embedding_size, **kw)
        self.layers = Sequential(*[TransformerLayer(embedding_size, num_head, dim_head, hidden_size,
                                                    dropout=dropout, causal=causal, **kw)
                                   for _ in range(num_layers)])

    def forward(self, x, h=None):
        x = x if self.batch_first else ops.transpose(x, (0, 1))
        _check_shape(self, "the input (batch first)", x, (None, None, self.embedding_size))
        batch, length, _ = x.shape
        if length > self.sequence_len:
            raise ValueError(f"{self!r}: the sequence has {length} positions, more than "
                             f"sequence_len={self.sequence_len}")
        positions = self.positional_embedding(Tensor(np.arange(length), requires_grad=False))
        x = self.layers(x + positions.reshape((1, length, self.embedding_size)).broadcast_to(x.shape))
        x = x if self.batch_first else ops.transpose(x, (0, 1))
        return x, init.zeros_like(x)

    def __repr__(self):
        return f"Transformer({self.embedding_size}, num_layers={len(self.layers.modules)})"
