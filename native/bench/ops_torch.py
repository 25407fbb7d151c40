"""PyTorch side of native/bench/ops.mjs: the same ResNet-20 layer ops at the same shapes, timed the
same way (best of --reps after warm-up), printed as one JSON object {op: milliseconds}.
Tensors are NCHW-contiguous, as in PyTorch's own training of the model."""
import argparse
import json
import time

import torch
import torch.nn.functional as F

aten = torch.ops.aten


def best_ms(fn, reps):
    for _ in range(2):
        fn()
    best = float('inf')
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1000


def conv_ops(name, n, c, h, o, stride, reps, out):
    x = torch.randn(n, c, h, h)
    w = torch.randn(o, c, 3, 3) * 0.1
    y = F.conv2d(x, w, None, stride, 1)
    gy = torch.randn_like(y)
    args = (gy, x, w, None, [stride, stride], [1, 1], [1, 1], False, [0, 0], 1)
    out[f'{name} forward'] = best_ms(lambda: F.conv2d(x, w, None, stride, 1), reps)
    out[f'{name} backward data'] = best_ms(lambda: aten.convolution_backward(*args, [True, False, False]), reps)
    out[f'{name} backward weights'] = best_ms(lambda: aten.convolution_backward(*args, [False, True, False]), reps)


def batch_norm_ops(name, shape, relu, reps, out):
    c = shape[1]
    x = torch.randn(shape) * 2 + 0.5
    weight, bias = torch.ones(c), torch.zeros(c)
    rm, rv = torch.zeros(c), torch.ones(c)
    gy = torch.randn(shape)

    def forward():
        y = F.batch_norm(x, rm, rv, weight, bias, True, 0.1, 1e-5)
        return F.relu(y) if relu else y

    y, mean, invstd = aten.native_batch_norm(x, weight, bias, rm, rv, True, 0.1, 1e-5)
    y = F.relu(y)

    def backward():
        g = aten.threshold_backward(gy, y, 0) if relu else gy
        return aten.native_batch_norm_backward(g, x, weight, rm, rv, mean, invstd, True, 1e-5, [True, True, True])

    out[f'{name} forward'] = best_ms(forward, reps)
    out[f'{name} backward'] = best_ms(backward, reps)


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--batch', type=int, default=128)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--reps', type=int, default=20)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    n, reps, out = a.batch, a.reps, {}
    conv_ops('conv 3->16 3x3 32x32', n, 3, 32, 16, 1, reps, out)
    conv_ops('conv 16->16 3x3 32x32', n, 16, 32, 16, 1, reps, out)
    conv_ops('conv 16->32 3x3 s2 32x32', n, 16, 32, 32, 2, reps, out)
    conv_ops('conv 32->32 3x3 16x16', n, 32, 16, 32, 1, reps, out)
    conv_ops('conv 64->64 3x3 8x8', n, 64, 8, 64, 1, reps, out)
    batch_norm_ops('bn+relu 16x32x32', [n, 16, 32, 32], True, reps, out)
    batch_norm_ops('bn 16x32x32', [n, 16, 32, 32], False, reps, out)
    batch_norm_ops('bn+relu 64x8x8', [n, 64, 8, 8], True, reps, out)

    a16, b16 = torch.randn(n, 16, 32, 32), torch.randn(n, 16, 32, 32)
    y16 = F.relu(a16 + b16)
    out['addRelu 16x32x32'] = best_ms(lambda: F.relu(a16 + b16), reps)
    out['reluBackward 16x32x32'] = best_ms(lambda: aten.threshold_backward(b16, y16, 0), reps)
    out['shortcutPad 16x32x32 -> 32x16x16'] = best_ms(lambda: F.pad(a16[:, :, ::2, ::2], (0, 0, 0, 0, 8, 8)), reps)
    g32 = torch.randn(n, 32, 16, 16)

    def shortcut_backward():
        gx = torch.zeros(n, 16, 32, 32)
        gx[:, :, ::2, ::2] = g32[:, 8:24]
        return gx

    out['shortcutPad backward'] = best_ms(shortcut_backward, reps)
    x64 = torch.randn(n, 64, 8, 8)
    out['globalAvgPool 64x8x8'] = best_ms(lambda: F.adaptive_avg_pool2d(x64, 1).flatten(1), reps)
    feats, w, b = torch.randn(n, 64), torch.randn(10, 64), torch.randn(10)
    out['linear 64->10'] = best_ms(lambda: F.linear(feats, w, b), reps)
    logits, labels = torch.randn(n, 10), torch.randint(0, 10, (n,))
    out['cross-entropy'] = best_ms(lambda: F.cross_entropy(logits, labels), reps)
    param, grad, buf = torch.randn(270000), torch.randn(270000), torch.zeros(270000)

    def sgd():
        d = grad.add(param, alpha=5e-4)
        buf.mul_(0.9).add_(d)
        param.add_(buf, alpha=-0.1)

    out['sgd step 270k params'] = best_ms(sgd, reps)
    print(json.dumps(out))


if __name__ == '__main__':
    main()
