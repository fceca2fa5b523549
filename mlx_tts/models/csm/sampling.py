"""Token sampling for CSM: temperature, then top-k, top-p (nucleus) and min-p filters, then a draw.

Temperature 0 is greedy. With a seed, draws come from an explicit key chain, so a seed always gives the same
codes whatever else uses MLX's global random state.
"""

import mlx.core as mx


def _check(name, value, low, high, low_open=False):
    if value is None:
        return
    if not (low < value if low_open else low <= value) or value > high:
        bounds = f"{'(' if low_open else '['}{low}, {high}]"
        raise ValueError(f"{name} must be in {bounds}, got {value}")


def make_sampler(temperature=0.9, top_k=None, top_p=None, min_p=None, seed=None):
    """A function logits [B, V] -> sampled ids [B]."""
    _check("temperature", temperature, 0, float("inf"))
    _check("top_p", top_p, 0, 1, low_open=True)
    _check("min_p", min_p, 0, 1)
    if top_k is not None and (int(top_k) != top_k or top_k < 1):
        raise ValueError(f"top_k must be a positive integer, got {top_k}")
    if temperature == 0:
        return lambda logits: mx.argmax(logits, axis=-1)
    keys = [mx.random.key(seed)] if seed is not None else None

    def sample(logits):
        logits = logits / temperature
        if top_k is not None and top_k < logits.shape[-1]:
            kth = mx.topk(logits, int(top_k), axis=-1).min(axis=-1, keepdims=True)
            logits = mx.where(logits < kth, -mx.inf, logits)
        if top_p is not None and top_p < 1:
            probs = mx.softmax(logits, axis=-1)
            ranked = mx.sort(probs, axis=-1)[..., ::-1]
            before = mx.cumsum(ranked, axis=-1) - ranked  # mass of the more likely tokens
            smallest_kept = mx.where(before < top_p, ranked, mx.inf).min(axis=-1, keepdims=True)
            logits = mx.where(probs < smallest_kept, -mx.inf, logits)
        if min_p is not None and min_p > 0:
            probs = mx.softmax(logits, axis=-1)
            logits = mx.where(probs < min_p * probs.max(axis=-1, keepdims=True), -mx.inf, logits)
        if keys is None:
            return mx.random.categorical(logits)
        keys[0], key = mx.random.split(keys[0])
        return mx.random.categorical(logits, key=key)

    return sample
