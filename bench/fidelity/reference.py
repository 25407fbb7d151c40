#!/usr/bin/python3
"""The reference side of the fidelity harness (bench/fidelity/fidelity.ts): runs the APoT and EWGS
authors' own modules (their checkouts, outside this repository) under Debian's PyTorch on images
the harness wrote, and writes what they compute. Nothing here restates their quantizers: the models
are built by their code, as their main.py / train_quant.py build them.

    reference.py eval  --method apot|ewgs --ref DIR --checkpoint FILE --bits B --images FILE (--out FILE | --layers FILE --layers-of I,J,...)
    reference.py train --method apot|ewgs --ref DIR --bits B --images FILE (--steps N | --epochs E) --seed S [--init FILE] [--batch N]
                       [--delta D] [--lr LR --weight-decay WD] --out FILE

Images files (written by the harness): a little-endian uint32 count, then count labels (uint8),
then count x 3 x 32 x 32 planar pixel bytes. eval writes count x 10 float32 logits, or with --layers
a JSON object of per-module outputs (module name -> shape and flat values) for the images listed.
Errors: one line on stderr (exit 3 for a checkout or checkpoint that does not fit).
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn

APOT_FILES = ['CIFAR10/models/quant_layer.py', 'CIFAR10/models/resnet.py', 'CIFAR10/main.py']
EWGS_FILES = ['CIFAR10/custom_models.py', 'CIFAR10/custom_modules.py', 'CIFAR10/utils.py', 'CIFAR10/train_quant.py']
# The constants of each reference's transforms.Normalize (APoT main.py, EWGS train_quant.py).
NORMALIZE = {
    'apot': ((0.491, 0.482, 0.447), (0.247, 0.243, 0.262)),
    'ewgs': ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
}


class Refused(Exception):
    pass


def import_reference(method, ref):
    files = APOT_FILES if method == 'apot' else EWGS_FILES
    repo = 'yhhhli/APoT_Quantization' if method == 'apot' else 'cvlab-yonsei/EWGS'
    missing = [f for f in files if not os.path.isfile(os.path.join(ref, f))]
    if missing:
        raise Refused(f'expected a checkout of github.com/{repo} at {ref}: {os.path.join(ref, missing[0])} is missing')
    sys.path.insert(0, os.path.join(ref, 'CIFAR10'))
    if method == 'apot':
        import models  # the reference's CIFAR10/models package
        return models
    import custom_models
    import custom_modules
    import utils
    return (custom_models, custom_modules, utils)


def ewgs_args(bits, delta=1e-3):
    levels = 2 ** bits
    return argparse.Namespace(num_classes=10, QWeightFlag=True, QActFlag=True, weight_levels=levels, act_levels=levels,
                              baseline=False, bkwd_scaling_factorW=delta, bkwd_scaling_factorA=delta)


def build(method, mods, bits, delta=1e-3):
    """The model as the reference's own script builds it."""
    if method == 'apot':
        # main.py: resnet20_cifar(float=bit == 32), then every QuantConv2d gets the run's bit-width.
        model = mods.resnet20_cifar(float=bits == 32)
        if bits != 32:
            for m in model.modules():
                if isinstance(m, mods.QuantConv2d):
                    m.weight_quant = mods.weight_quantize_fn(w_bit=bits)
                    m.act_grid = mods.build_power_value(bits)
                    m.act_alq = mods.act_quantization(bits, m.act_grid)
        return model
    custom_models = mods[0]
    return custom_models.resnet20_fp(ewgs_args(32)) if bits == 32 else custom_models.resnet20_quant(ewgs_args(bits, delta))


def load_state(method, model, path):
    if not os.path.isfile(path):
        raise Refused(f'{path}: no such checkpoint')
    try:
        saved = torch.load(path, map_location='cpu')
    except Exception as e:  # a file torch cannot read at all
        raise Refused(f'{path}: not a PyTorch checkpoint the reference can load ({type(e).__name__}: {e})')
    key = 'state_dict' if method == 'apot' else 'model'
    if not isinstance(saved, dict) or key not in saved:
        raise Refused(f"{path}: expected a dict with '{key}' (what the {method} reference saves), got keys {list(saved)[:5] if isinstance(saved, dict) else type(saved).__name__}")
    state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in saved[key].items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        what = f'missing {missing[0]}' if missing else f'unexpected {unexpected[0]}'
        raise Refused(f'{path}: does not fit the reference {method} ResNet-20 at this bit-width ({what}; {len(missing)} missing, {len(unexpected)} unexpected)')
    for k, v in state.items():
        if own[k].shape != v.shape:
            raise Refused(f'{path}: {k} has shape {list(v.shape)}, the reference model {list(own[k].shape)}')
    model.load_state_dict(state)


def read_images(path):
    with open(path, 'rb') as f:
        data = f.read()
    (count,) = struct.unpack_from('<I', data, 0)
    labels = np.frombuffer(data, np.uint8, count, 4).astype(np.int64)
    pixels = np.frombuffer(data, np.uint8, count * 3072, 4 + count).reshape(count, 3, 32, 32)
    return pixels, labels


def to_pil(pixels):
    from PIL import Image
    return [Image.fromarray(np.ascontiguousarray(p.transpose(1, 2, 0))) for p in pixels]


def test_transform(method):
    import torchvision.transforms as T
    mean, std = NORMALIZE[method]
    return T.Compose([T.ToTensor(), T.Normalize(mean, std)])


def train_transform(method):
    import torchvision.transforms as T
    mean, std = NORMALIZE[method]
    return T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])


def evaluate(a):
    mods = import_reference(a.method, a.ref)
    model = build(a.method, mods, a.bits)
    load_state(a.method, model, a.checkpoint)
    model.eval()
    pixels, _ = read_images(a.images)
    transform = test_transform(a.method)
    images = to_pil(pixels)
    if a.layers:
        dump_layers(model, torch.stack([transform(images[int(i)]) for i in a.layers_of.split(',')]), a.layers)
        return
    out = []
    with torch.no_grad():
        for i in range(0, len(images), 100):  # the references' test batch
            out.append(model(torch.stack([transform(im) for im in images[i:i + 100]])))
    np.concatenate([o.numpy() for o in out]).astype('<f4').tofile(a.out)


def dump_layers(model, x, path):
    """Every leaf module's output (and each block's) on x, by module name."""
    outputs = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: outputs.__setitem__(name, out.detach().clone()))
             for name, m in model.named_modules() if name]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    with open(path, 'w') as f:
        json.dump({k: {'shape': list(v.shape), 'values': v.flatten().tolist()} for k, v in outputs.items()}, f)


def train(a):
    """A model trained by the reference's own modules and recipe, saved as the reference saves.

    Without --epochs (the EWGS checkpoint maker): the float EWGS model by train_fp.py's loop (Adam
    1e-3), or a quantized one started as train_quant.py starts it, --steps steps at constant rates.
    With --epochs (the fine-tune comparison): --epochs passes over the images with the script's
    whole recipe, its learning-rate schedule stepped per epoch as the script steps it: EWGS
    train_quant.py (Adam groups 1e-3 / 1e-5, cosine to 0 over the run, delta --delta fixed), APoT
    main.py (SGD momentum 0.9, --lr, --weight-decay, the alphas' own groups, x0.1 at 150 and 225)."""
    mods = import_reference(a.method, a.ref)
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    import random
    random.seed(a.seed)
    model = build(a.method, mods, a.bits, a.delta)
    pixels, labels = read_images(a.images)
    dataset = ImageSet(to_pil(pixels), labels, train_transform(a.method))
    generator = torch.Generator().manual_seed(a.seed)
    # EWGS's scripts keep the last partial batch; the checkpoint maker drops it (as it always did).
    loader = torch.utils.data.DataLoader(dataset, batch_size=a.batch, shuffle=True, num_workers=0, generator=generator, drop_last=a.epochs is None)
    if a.bits != 32 and not a.init:
        raise Refused('train: a quantized model starts from a float checkpoint (--init FILE)')
    if a.method == 'apot':
        groups, per_epoch = apot_recipe(model, a)
    else:
        groups, per_epoch = ewgs_recipe(model, mods, loader, a)
    criterion = nn.CrossEntropyLoss()
    steps = a.steps if a.epochs is None else a.epochs * len(loader)
    model.train()
    step, epoch, history = 0, 0, []
    while step < steps:
        seen, loss_sum, correct = 0, 0.0, 0
        for images, target in loader:
            if step == steps:
                break
            for o in groups:
                o.zero_grad()
            output = model(images)
            loss = criterion(output, target)
            loss.backward()
            for o in groups:
                o.step()
            step += 1
            seen += len(target)
            loss_sum += loss.item() * len(target)
            correct += (output.argmax(1) == target).sum().item()
            if step % 20 == 0 or step == steps:
                print(f'step {step}/{steps} loss {loss.item():.4f}', file=sys.stderr, flush=True)
        history.append({'epoch': epoch, 'trainLoss': loss_sum / seen, 'trainTop1': 100 * correct / seen})
        epoch += 1
        if a.epochs is not None:
            per_epoch(epoch)
    key = 'state_dict' if a.method == 'apot' else 'model'
    torch.save({'epoch': epoch, key: model.state_dict()}, a.out)
    with open(a.out + '.json', 'w') as f:  # the training curve, for the harness to print beside tinyquant's
        json.dump(history, f)


def apot_recipe(model, a):
    """main.py: the float checkpoint loaded with strict=False (the alphas keep their initial values),
    SGD with act_alpha (lr 0.1) and wgt_alpha (lr 0.02) in groups of their own, weight decay 1e-4
    for both; adjust_learning_rate multiplies every group by 0.1 at epochs 150 and 225."""
    saved = torch.load(a.init, map_location='cpu')
    state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in saved['state_dict'].items()}
    report = model.load_state_dict(state, strict=False)
    if report.unexpected_keys or any('alpha' not in k for k in report.missing_keys):
        raise Refused(f'{a.init}: does not fit the reference apot ResNet-20 (missing {report.missing_keys[:3]}, unexpected {report.unexpected_keys[:3]})')
    params = []
    for name, p in model.named_parameters():
        if 'act_alpha' in name:
            params.append({'params': [p], 'lr': 1e-1, 'weight_decay': 1e-4})
        elif 'wgt_alpha' in name:
            params.append({'params': [p], 'lr': 2e-2, 'weight_decay': 1e-4})
        else:
            params.append({'params': [p]})
    optimizer = torch.optim.SGD(params, lr=a.lr, momentum=0.9, weight_decay=a.weight_decay)

    def per_epoch(epoch):
        if epoch in (150, 225):
            for g in optimizer.param_groups:
                g['lr'] *= 0.1
    return [optimizer], per_epoch


def ewgs_recipe(model, mods, loader, a):
    """train_quant.py: pretrained weights copied, init_quant_model on one batch, Adam 1e-3 (weight
    decay 1e-4) for the model and 1e-5 for the quantizers, each with CosineAnnealingLR(T_max =
    epochs, eta_min 0) stepped per epoch. The float model (bits 32): train_fp.py's Adam 1e-3."""
    custom_models, custom_modules, utils = mods
    if a.bits == 32:
        return [torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)], lambda epoch: None
    trained = torch.load(a.init, map_location='cpu')
    current = model.state_dict()
    for k in trained['model'].keys():  # train_quant.py's copy of the pretrained weights
        if k in current:
            current[k].copy_(trained['model'][k])
    model.load_state_dict(current)
    utils.init_quant_model(model, loader, 'cpu')
    model_params, quant_params = split_params(model, custom_modules.QConv)
    groups = [torch.optim.Adam(model_params, lr=1e-3, weight_decay=1e-4), torch.optim.Adam(quant_params, lr=1e-5)]
    if a.epochs is None:
        return groups, lambda epoch: None
    schedulers = [torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=a.epochs, eta_min=0.0) for o in groups]
    return groups, lambda epoch: [s.step() for s in schedulers]


def split_params(model, qconv):
    """train_quant.py's two groups: model weights (Adam 1e-3) and quantizer parameters (Adam 1e-5)."""
    model_params, quant_params = [], []
    for m in model.modules():
        if isinstance(m, qconv):
            model_params.append(m.weight)
            quant_params += [m.lW, m.uW, m.lA, m.uA, m.output_scale]
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            model_params += [m.weight] + ([m.bias] if m.bias is not None else [])
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            model_params += [m.weight, m.bias]
    return model_params, quant_params


class ImageSet(torch.utils.data.Dataset):
    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(self.images[i]), int(self.labels[i])


def main():
    p = argparse.ArgumentParser()
    p.add_argument('command', choices=['eval', 'train'])
    p.add_argument('--method', choices=['apot', 'ewgs'], required=True)
    p.add_argument('--ref', required=True)
    p.add_argument('--checkpoint')
    p.add_argument('--init')
    p.add_argument('--bits', type=int, required=True)
    p.add_argument('--images', required=True)
    p.add_argument('--out')
    p.add_argument('--layers')
    p.add_argument('--layers-of', default='0', help='with --layers: the images (indices, comma-separated) whose layer outputs to write')
    p.add_argument('--steps', type=int, default=100)
    p.add_argument('--epochs', type=int, help='train: passes over the images with the whole recipe (schedule included)')
    p.add_argument('--delta', type=float, default=1e-3, help='EWGS: the fixed backward scaling factor of weights and activations')
    p.add_argument('--lr', type=float, default=0.04, help='APoT: the base learning rate (train_res20.sh: 4e-2 for the quantized runs)')
    p.add_argument('--weight-decay', type=float, default=1e-4, help='APoT: the base weight decay (train_res20.sh: 1e-4, 3e-5 at 2 bits)')
    p.add_argument('--batch', type=int, default=128)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--threads', type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    try:
        evaluate(a) if a.command == 'eval' else train(a)
    except Refused as e:
        print(f'reference.py: {e}', file=sys.stderr)
        sys.exit(3)


if __name__ == '__main__':
    main()
