import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { setBackend } from '../src/backend/index.js';
import { Module, Parameter } from '../src/nn/module.js';
import { Adam, Sgd, byKind, groupParameters, lrFactor, scheduleFactor } from '../src/optim/index.js';
import { Tensor } from '../src/tensor/tensor.js';

before(() => setBackend('js'));

class Two extends Module {
  readonly w = this.registerParameter('w', new Parameter(Float32Array.of(1, -2), [2], 'weight'));
  readonly a = this.registerParameter('alpha', new Parameter(Float32Array.of(3), [], 'quant'));
  forward(x: Tensor): Tensor {
    return x;
  }
}

function setGrad(p: Parameter, values: number[]): void {
  p.grad?.dispose();
  p.grad = Tensor.fromArray(values, p.shape);
}

const close = (a: ArrayLike<number>, b: number[], tol = 1e-6): void =>
  b.forEach((v, i) => assert.ok(Math.abs(a[i] - v) < tol * Math.max(1, Math.abs(v)), `[${i}] ${a[i]} vs ${v}`));

describe('optimizers', () => {
  test('parameter groups: each kind with its own lr and weight decay', () => {
    const m = new Two();
    const groups = groupParameters(m, [{ name: 'quant', match: byKind('quant'), lr: 0.01, weightDecay: 0 }], { lr: 0.1, weightDecay: 1e-4 });
    assert.deepEqual(groups.map((g) => [g.name, g.params.map(([n]) => n), g.lr, g.weightDecay]), [
      ['quant', ['alpha'], 0.01, 0],
      ['default', ['w'], 0.1, 1e-4],
    ]);
  });

  test('SGD with momentum, weight decay and Nesterov follows PyTorch over three steps', () => {
    for (const nesterov of [false, true]) {
      const m = new Two();
      const opt = new Sgd(groupParameters(m, [], { lr: 0.1, weightDecay: 0.01 }), { momentum: 0.9, nesterov });
      const grads = [[0.5, -1], [0.25, 0.5], [-1, 2]];
      const w = [1, -2];
      const v = [0, 0];
      grads.forEach((g, step) => {
        setGrad(m.w, g);
        opt.step();
        for (let i = 0; i < 2; i++) {
          const d = g[i] + 0.01 * w[i];
          v[i] = step === 0 ? d : 0.9 * v[i] + d;
          w[i] -= 0.1 * (nesterov ? d + 0.9 * v[i] : v[i]);
        }
      });
      close(m.w.toArray(), w);
    }
  });

  test('Adam (L2) and AdamW (decoupled) follow PyTorch over three steps', () => {
    for (const decoupled of [false, true]) {
      const m = new Two();
      const opt = new Adam(groupParameters(m, [], { lr: 0.01, weightDecay: 0.1 }), { decoupled });
      const grads = [[0.5, -1], [0.25, 0.5], [-1, 2]];
      const w = [1, -2];
      const mo = [0, 0];
      const ve = [0, 0];
      grads.forEach((g, k) => {
        setGrad(m.w, g);
        opt.step();
        const t = k + 1;
        for (let i = 0; i < 2; i++) {
          let d = g[i];
          if (decoupled) w[i] *= 1 - 0.01 * 0.1;
          else d += 0.1 * w[i];
          mo[i] = 0.9 * mo[i] + 0.1 * d;
          ve[i] = 0.999 * ve[i] + 0.001 * d * d;
          const mh = mo[i] / (1 - 0.9 ** t);
          const vh = ve[i] / (1 - 0.999 ** t);
          w[i] -= (0.01 * mh) / (Math.sqrt(vh) + 1e-8);
        }
      });
      close(m.w.toArray(), w, 1e-5);
    }
  });

  test('optimizer state round-trips so a resumed run continues identically', () => {
    const run = (resumeAt: number | null): Float32Array => {
      let m = new Two();
      let opt = new Sgd(groupParameters(m, [], { lr: 0.1, weightDecay: 0 }), { momentum: 0.9 });
      for (let s = 0; s < 4; s++) {
        if (s === resumeAt) {
          const weights = m.stateDict();
          const state = opt.state();
          m = new Two();
          m.loadStateDict(weights);
          opt = new Sgd(groupParameters(m, [], { lr: 0.1, weightDecay: 0 }), { momentum: 0.9 });
          opt.loadState(state);
        }
        setGrad(m.w, [s + 1, -s]);
        setGrad(m.a, [0.1 * s]);
        opt.step();
      }
      return m.w.toArray();
    };
    assert.deepEqual(run(2), run(null));
  });

  test('schedules', () => {
    assert.equal(scheduleFactor({ kind: 'multistep', milestones: [150, 225], gamma: 0.1 }, 149), 1);
    assert.ok(Math.abs(scheduleFactor({ kind: 'multistep', milestones: [150, 225], gamma: 0.1 }, 225) - 0.01) < 1e-12);
    const cos = { kind: 'cosine', epochs: 400 } as const;
    assert.equal(scheduleFactor(cos, 0), 1);
    assert.ok(Math.abs(scheduleFactor(cos, 200) - 0.5) < 1e-12);
    assert.ok(Math.abs(scheduleFactor(cos, 100) - (1 + Math.cos(Math.PI / 4)) / 2) < 1e-12);
    assert.ok(scheduleFactor(cos, 400) < 1e-12);
    assert.ok(Math.abs(lrFactor(cos, { epochs: 2, startFactor: 0 }, 0, 1) - 0.5) < 1e-12);
    assert.equal(lrFactor(cos, { epochs: 2 }, 3, 3), scheduleFactor(cos, 3));
  });
});
