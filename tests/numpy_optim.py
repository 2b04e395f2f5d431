"""Numpy restatements of the optimizers that tests compare bertlib against (tests/model/test_optim.py
checks LAMB against it step by step; tests/train/test_grad_clip.py builds whole training steps on it)."""

import numpy as np

EXCLUDED = ("LayerNorm", "layer_norm", "bias")


class NpLamb:
    """Reference LAMB (You et al. 2019 / NVIDIA BERT) in float64, one step at a time: ``step(params,
    grads, lr)`` with {name: array} dicts returns the new params; names containing one of EXCLUDED get
    neither weight decay nor the trust ratio."""

    def __init__(self, wd, b1=0.9, b2=0.999, eps=1e-6):
        self.wd, self.b1, self.b2, self.eps = wd, b1, b2, eps
        self.m, self.v, self.t = {}, {}, 0

    def step(self, params, grads, lr):
        b1, b2, self.t = self.b1, self.b2, self.t + 1
        out = {}
        for k, w in params.items():
            w = np.asarray(w, np.float64)
            g = grads[k].astype(np.float64)
            self.m[k] = b1 * self.m.get(k, 0.0) + (1 - b1) * g
            self.v[k] = b2 * self.v.get(k, 0.0) + (1 - b2) * g * g
            mh, vh = self.m[k] / (1 - b1**self.t), self.v[k] / (1 - b2**self.t)
            u = mh / (np.sqrt(vh) + self.eps)
            excluded = any(s in k for s in EXCLUDED)
            if not excluded:
                u = u + self.wd * w
            ratio = 1.0
            if not excluded:
                wn, un = np.linalg.norm(w), np.linalg.norm(u)
                ratio = wn / un if (wn > 0 and un > 0) else 1.0
            out[k] = w - lr * ratio * u
        return out


def np_lamb(params, grads_per_step, lrs, wd, b1=0.9, b2=0.999, eps=1e-6):
    """Reference LAMB in float64: params {name: array}, grads_per_step [{name: array}]."""
    opt = NpLamb(wd, b1, b2, eps)
    params = {k: v.astype(np.float64).copy() for k, v in params.items()}
    for grads, lr in zip(grads_per_step, lrs):
        params = opt.step(params, grads, lr)
    return params
