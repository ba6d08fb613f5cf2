"""nn.MultiHeadAttention, AttentionLayer, TransformerLayer and Transformer: needle's shapes,
masking and initialisation order, and outputs and gradients equal to PyTorch's (its attention and
its pre-norm TransformerEncoderLayer) with the weights copied."""
import math

import numpy as np
import pytest

import ndlc.nn as nn
from ndlc.frontend.nn.transformer import causal_mask
from oracle import assert_close, tensor


@pytest.fixture
def torch():
    return pytest.importorskip("torch", reason="PyTorch is the oracle of these tests")


def t(torch, array):
    return torch.tensor(np.asarray(array, np.float32), requires_grad=True)


def torch_causal(torch, queries, keys):
    """PyTorch's lower-right causal mask (a query at position i sees keys up to i + keys - queries)."""
    from torch.nn.attention.bias import causal_lower_right
    return causal_lower_right(queries, keys)


@pytest.mark.parametrize("causal, queries, keys", [(False, 4, 4), (True, 4, 4), (True, 3, 5), (False, 2, 5)])
def test_multi_head_attention_equals_torch(torch, causal, queries, keys):
    import torch.nn.functional as F
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 3, n, 8)).astype(np.float32) for n in (queries, keys, keys))
    g = rng.standard_normal((2, 3, queries, 8)).astype(np.float32)
    ours_in = [tensor(a) for a in (q, k, v)]
    result, probs = nn.MultiHeadAttention(causal=causal)(*ours_in)
    (result * tensor(g, False)).sum().backward()

    theirs_in = [t(torch, a) for a in (q, k, v)]
    mask = torch_causal(torch, queries, keys) if causal else None
    ref = F.scaled_dot_product_attention(*theirs_in, attn_mask=mask)
    (ref * torch.tensor(g)).sum().backward()
    scores = theirs_in[0] @ theirs_in[1].transpose(-1, -2) / math.sqrt(8)
    if causal:
        scores = scores.masked_fill(~torch.ones(queries, keys, dtype=torch.bool).tril(keys - queries), -math.inf)
    assert result.shape == (2, 3, queries, 8) and probs.shape == (2, 3, queries, keys)
    assert_close(result.numpy(), ref.detach().numpy(), "result")
    assert_close(probs.numpy(), torch.softmax(scores, -1).detach().numpy(), "probs")
    for ours, theirs in zip(ours_in, theirs_in):
        assert_close(ours.grad.numpy(), theirs.grad.numpy(), "gradient")


def test_causal_mask_is_needles():
    mask = causal_mask(2, 4).numpy()
    big = -np.finfo(np.float32).max
    np.testing.assert_array_equal(mask[0, 0], [[0, 0, 0, big], [0, 0, 0, 0]])


def test_attention_dropout_applies_to_the_probabilities():
    q = tensor(np.random.randn(1, 2, 4, 3))
    attention = nn.MultiHeadAttention(dropout=0.5)
    result, probs = attention(q, q, q)
    rows = probs.numpy().sum(-1)
    assert ((probs.numpy() == 0).any() and not np.allclose(rows, 1))
    np.testing.assert_allclose(result.numpy(), probs.numpy() @ q.numpy(), rtol=1e-5, atol=1e-6)
    attention.eval()
    np.testing.assert_allclose(attention(q, q, q)[1].numpy().sum(-1), 1, rtol=1e-6)


def test_dropout_zero_draws_nothing():
    x = tensor(np.random.randn(2, 3))
    state = np.random.get_state()[1].copy()
    assert nn.Dropout(0.0)(x) is x
    np.testing.assert_array_equal(np.random.get_state()[1], state)


def randomise(module, seed=0):
    """Random (non-default) values in every LayerNorm's weight and bias, so they are tested too."""
    rng = np.random.default_rng(seed)
    for p in module.parameters():
        if p.ndim == 1:
            p.data = tensor(1 + 0.3 * rng.standard_normal(p.shape), False)
    return module


def test_attention_layer_equals_torch_multihead_attention(torch):
    import torch.nn.functional as F
    heads, dim_head, kv_features = 2, 4, 5
    features = heads * dim_head  # PyTorch's MultiheadAttention projects to its input's width
    layer = randomise(nn.AttentionLayer(features, heads, dim_head, k_features=kv_features,
                                        v_features=kv_features, causal=True))
    ref = torch.nn.MultiheadAttention(features, heads, bias=False, kdim=kv_features, vdim=kv_features,
                                      batch_first=True)
    with torch.no_grad():
        for name, linear in [("q_proj_weight", layer.q_projection), ("k_proj_weight", layer.k_projection),
                             ("v_proj_weight", layer.v_projection)]:
            getattr(ref, name).copy_(torch.tensor(linear.weight.numpy().T))
        ref.out_proj.weight.copy_(torch.tensor(layer.out_projection.weight.numpy().T))
    rng = np.random.default_rng(1)
    q, kv = rng.standard_normal((2, 3, features)), rng.standard_normal((2, 5, kv_features))
    g = rng.standard_normal((2, 3, features))
    ours = layer(tensor(q), tensor(kv), tensor(kv))
    (ours * tensor(g, False)).sum().backward()

    def norm(x, ln):
        return F.layer_norm(x, (x.shape[-1],), torch.tensor(ln.weight.numpy()), torch.tensor(ln.bias.numpy()))
    tq, tkv = t(torch, q), t(torch, kv)
    mask = ~torch.ones(3, 5, dtype=torch.bool).tril(2)
    theirs, _ = ref(norm(tq, layer.prenorm_q), norm(tkv, layer.prenorm_k), norm(tkv, layer.prenorm_v),
                    attn_mask=mask, need_weights=False)
    (theirs * torch.tensor(g, dtype=torch.float32)).sum().backward()
    assert ours.shape == (2, 3, features)
    assert_close(ours.numpy(), theirs.detach().numpy(), "attention layer")
    assert_close(layer.q_projection.weight.grad.numpy(), ref.q_proj_weight.grad.numpy().T, "dWq")
    assert_close(layer.out_projection.weight.grad.numpy(), ref.out_proj.weight.grad.numpy().T, "dWout")


def torch_transformer_layer(torch, layer, heads):
    """PyTorch's pre-norm encoder layer holding `layer`'s weights. PyTorch normalises q, k and v
    with one LayerNorm (norm1), so prenorm_q/k/v must hold equal values."""
    features = layer.q_features
    ref = torch.nn.TransformerEncoderLayer(features, heads, dim_feedforward=layer.linear1.out_features,
                                           dropout=0.0, batch_first=True, norm_first=True)
    attention = layer.attention

    def vector(p):
        return torch.tensor(p.numpy().reshape(-1))
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(torch.tensor(np.concatenate(
            [attention.q_projection.weight.numpy().T, attention.k_projection.weight.numpy().T,
             attention.v_projection.weight.numpy().T])))
        ref.self_attn.in_proj_bias.zero_()
        ref.self_attn.out_proj.weight.copy_(torch.tensor(attention.out_projection.weight.numpy().T))
        ref.self_attn.out_proj.bias.zero_()
        for ours, theirs in [(layer.linear1, ref.linear1), (layer.linear2, ref.linear2)]:
            theirs.weight.copy_(torch.tensor(ours.weight.numpy().T))
            theirs.bias.copy_(vector(ours.bias))
        for ours, theirs in [(attention.prenorm_q, ref.norm1), (layer.layernorm, ref.norm2)]:
            theirs.weight.copy_(vector(ours.weight))
            theirs.bias.copy_(vector(ours.bias))
    return ref


def test_transformer_layer_equals_torch_encoder_layer(torch):
    heads, dim_head, length = 2, 4, 5
    features = heads * dim_head
    layer = randomise(nn.TransformerLayer(features, heads, dim_head, hidden_size=16, causal=True))
    attention = layer.attention
    for other in (attention.prenorm_k, attention.prenorm_v):
        other.weight.data, other.bias.data = attention.prenorm_q.weight.data, attention.prenorm_q.bias.data
    ref = torch_transformer_layer(torch, layer, heads)
    rng = np.random.default_rng(2)
    x, g = rng.standard_normal((3, length, features)), rng.standard_normal((3, length, features))
    xt = tensor(x)
    out = layer(xt)
    (out * tensor(g, False)).sum().backward()
    tx = t(torch, x)
    mask = torch.nn.Transformer.generate_square_subsequent_mask(length)
    ref_out = ref(tx, src_mask=mask, is_causal=True)
    (ref_out * torch.tensor(g, dtype=torch.float32)).sum().backward()
    assert_close(out.numpy(), ref_out.detach().numpy(), "transformer layer")
    assert_close(xt.grad.numpy(), tx.grad.numpy(), "dx")
    assert_close(layer.linear1.weight.grad.numpy(), ref.linear1.weight.grad.numpy().T, "dW1")
    assert_close(layer.linear2.bias.grad.numpy().reshape(-1), ref.linear2.bias.grad.numpy(), "db2")
    assert_close(attention.v_projection.weight.grad.numpy(),
                 ref.self_attn.in_proj_weight.grad.numpy()[2 * features:].T, "dWv")


def kaiming(fan_in, *shape):
    bound = math.sqrt(2) * math.sqrt(3 / fan_in)
    return (np.random.rand(*shape) * 2 * bound - bound).astype(np.float32)


def test_transformer_draws_in_needles_order():
    np.random.seed(7)
    model = nn.Transformer(8, 12, 2, num_head=2, dim_head=3, sequence_len=10)
    np.random.seed(7)
    expected = [np.random.randn(10, 8).astype(np.float32)]
    for _ in range(2):
        expected += [kaiming(8, 8, 6), kaiming(8, 8, 6), kaiming(8, 8, 6), kaiming(6, 6, 8),
                     kaiming(8, 8, 12), kaiming(12, 12, 1).reshape(1, 12), kaiming(12, 12, 8),
                     kaiming(8, 8, 1).reshape(1, 8)]
    drawn = [p.numpy() for p in model.parameters() if not (p.ndim == 1 and p.shape[0] == 8)]
    assert len(drawn) == len(expected)
    for got, want in zip(drawn, expected):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("batch_first", [False, True])
def test_transformer_shapes_positions_and_zero_state(batch_first):
    model = nn.Transformer(8, 16, 1, num_head=2, dim_head=4, batch_first=batch_first, sequence_len=6)
    x = np.random.randn(5, 3, 8)
    out, h = model(tensor(x))
    assert out.shape == h.shape == (5, 3, 8) and not h.numpy().any()
    bare = model.layers(tensor(x if batch_first else x.transpose(1, 0, 2))
                        + model.positional_embedding.weight.numpy()[:(3 if batch_first else 5)][None])
    np.testing.assert_allclose(out.numpy(), bare.numpy() if batch_first else bare.numpy().transpose(1, 0, 2),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"7 positions, more than sequence_len=6"):
        model(tensor(np.zeros((1, 7, 8) if batch_first else (7, 1, 8))))


@pytest.mark.parametrize("call, message", [
    (lambda: nn.MultiHeadAttention()(*(tensor(np.zeros((1, 2, 3, d))) for d in (4, 5, 4))),
     r"MultiHeadAttention\(dropout=0.0, causal=False\): k must have shape \(1, 2, any, 4\), got \(1, 2, 3, 5\)"),
    (lambda: nn.AttentionLayer(4, 2, 2)(tensor(np.zeros((2, 3, 5)))),
     r"AttentionLayer\(4, num_head=2, dim_head=2\): q must have shape \(any, any, 4\)"),
])
def test_bad_shapes_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()
