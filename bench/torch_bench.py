"""PyTorch side of `npm run bench:compare`: the same CIFAR ResNet, batch, loss, optimizer and
synthetic data as `tinyquant bench train`, printing the same JSON line."""
import argparse
import json
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, inp, planes, stride, option):
        super().__init__()
        self.conv1 = nn.Conv2d(inp, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = None
        if stride != 1 or inp != planes:
            if option == 'A':
                pad = (planes - inp) // 2
                self.shortcut = lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, pad, planes - inp - pad))
            else:
                self.shortcut = nn.Sequential(nn.Conv2d(inp, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (self.shortcut(x) if self.shortcut is not None else x))


class ResNet(nn.Module):
    def __init__(self, depth, classes, option, head_bn):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, inp = [], 16
        for stage, planes in enumerate([16, 32, 64]):
            for b in range(n):
                layers.append(Block(inp, planes, 2 if (b == 0 and stage > 0) else 1, option))
                inp = planes
        self.layers = nn.Sequential(*layers)
        self.bn2 = nn.BatchNorm1d(64) if head_bn else nn.Identity()
        self.linear = nn.Linear(64, classes)

    def forward(self, x):
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(self.bn2(out))


MODELS = {
    'resnet20': (20, 'A', False), 'resnet32': (32, 'A', False), 'resnet44': (44, 'A', False),
    'resnet56': (56, 'A', False), 'resnet20-apot': (20, 'B', False), 'resnet56-apot': (56, 'B', False),
    'resnet20-ewgs': (20, 'A', True),
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--model', default='resnet20', choices=sorted(MODELS))
    p.add_argument('--batch', type=int, default=128)
    p.add_argument('--iters', type=int, default=20)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--threads', type=int, default=0)
    p.add_argument('--classes', type=int, default=10)
    p.add_argument('--eval', action='store_true')
    a = p.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    depth, option, head_bn = MODELS[a.model]
    model = ResNet(depth, a.classes, option, head_bn)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    data = [(torch.randn(a.batch, 3, 32, 32), torch.randint(0, a.classes, (a.batch,))) for _ in range(4)]

    def step(i):
        x, y = data[i % len(data)]
        if a.eval:
            with torch.no_grad():
                model(x)
        else:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

    if a.eval:
        model.eval()
    for i in range(a.warmup):
        step(i)
    start = time.perf_counter()
    for i in range(a.iters):
        step(i)
    seconds = time.perf_counter() - start
    print(json.dumps({
        'mode': 'eval' if a.eval else 'train', 'model': a.model, 'method': 'float', 'wbits': 32, 'abits': 32,
        'batch': a.batch, 'iters': a.iters, 'imgPerSec': a.batch * a.iters / seconds,
        'msPerStep': seconds * 1000 / a.iters,
        'peakRssMB': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        'backend': 'pytorch ' + torch.__version__, 'threads': torch.get_num_threads(),
    }))


if __name__ == '__main__':
    main()
