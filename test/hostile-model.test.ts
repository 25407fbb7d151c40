/**
 * Hostile model and config files (issue 17): tqm files whose payload was changed and resealed
 * (length and checksum recomputed, so that decoding and validation run on the damage) give a named
 * TqmError or IntegerModelError naming the field, never a TypeError; config files give a
 * one-line ConfigError naming the file and the key. Found by, and kept covered by, the fuzz
 * targets (test/fuzz/).
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import type { IntegerModel } from '../src/export/ir.js';
import { sha256 } from '../src/export/sha256.js';
import { TQM_HEADER_BYTES, TqmError, decodeTqm, encodeTqm } from '../src/export/tqm.js';
import { IntegerModelError, validateIntegerModel } from '../src/export/validate.js';
import { ConfigError, readConfigFile } from '../src/train/config.js';
import { tempDir } from './fixtures/data/make.js';
import { irCases } from './ir-models.js';

const model = irCases(2)[0].model;
const bytes = encodeTqm(model);

/** Payload length and checksum recomputed after an edit, as a careful forger would. */
function reseal(file: Uint8Array): Uint8Array {
  const out = Uint8Array.from(file);
  new DataView(out.buffer).setUint32(8, out.length - TQM_HEADER_BYTES, true);
  out.set(sha256(out.subarray(0, 12), out.subarray(TQM_HEADER_BYTES)), 12);
  return out;
}

/** The file with the first occurrence of `from` (a name) replaced by bytes of the same length. */
function replaceName(from: string, to: Uint8Array): Uint8Array {
  const at = Buffer.from(bytes).indexOf(Buffer.from(from));
  assert.ok(at > 0);
  const out = Uint8Array.from(bytes);
  out.set(to, at);
  return reseal(out);
}

test('tqm: a name that is not UTF-8 or holds a line break is a TqmError naming the field', () => {
  const name = model.ops[1].kind === 'conv' ? model.ops[1].name : assert.fail('op 1 is a conv');
  const notUtf8 = /^(tensor \d+|op \d+ \(conv\)) name is not valid UTF-8$/;
  const control = /^(tensor \d+|op \d+ \(conv\)) name "a\\n[^"]*" holds control characters$/;
  assert.throws(() => decodeTqm(replaceName(name, Uint8Array.of(0xff, 0xfe))), (e: Error) => e instanceof TqmError && notUtf8.test(e.message));
  assert.throws(() => decodeTqm(replaceName(name, Buffer.from('a\n'))), (e: Error) => e instanceof TqmError && control.test(e.message));
});

test('tqm: meta fields of the wrong type and tensors too large for any engine are IntegerModelErrors naming the field', () => {
  const withMeta = (meta: Record<string, unknown>): IntegerModel => ({ ...model, meta: { ...model.meta, ...meta } as IntegerModel['meta'] });
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ normalization: { mean: 'abc', std: [1, 1, 1] } }, /normalization must have one finite mean and one positive std per input channel \(3\)/],
    [{ normalization: { mean: [0, 0, 0], std: [1, 0, 1] } }, /normalization must have one finite mean and one positive std/],
    [{ classes: [1, 2, 3, 4, 5] }, /classes must name each of the 5 outputs/],
    [{ notes: [{}] }, /notes must be a list of strings/],
    [{ wbits: '4' }, /wbits must be an integer bit count, got "4"/],
    [{ model: null }, /model must be a string, got null/],
  ];
  for (const [meta, message] of cases) {
    assert.throws(() => validateIntegerModel(withMeta(meta)), (e: Error) => e instanceof IntegerModelError && message.test(e.message), JSON.stringify(meta));
    // and from a file: meta is JSON, written here past the encoder's own validation
    const text = Buffer.from(JSON.stringify({ ...model.meta, ...meta }));
    const payload = bytes.subarray(TQM_HEADER_BYTES);
    const oldLength = new DataView(payload.buffer, payload.byteOffset).getUint32(0, true);
    const length = Buffer.alloc(4);
    length.writeUInt32LE(text.length);
    const file = reseal(Buffer.concat([bytes.subarray(0, TQM_HEADER_BYTES), length, text, payload.subarray(4 + oldLength)]));
    assert.throws(() => decodeTqm(file), (e: Error) => e instanceof IntegerModelError && message.test(e.message));
  }
  const huge = { ...model, tensors: model.tensors.map((t, i) => (i === 0 ? { ...t, shape: [1, 8192, 4096] as const } : t)) };
  assert.throws(() => validateIntegerModel(huge), /tensor 0 \(image\): shape \[1,8192,4096\] has 33554432 elements, more than the 16777216/);
});

function configFile(dir: string, name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

test('config files: parse errors on one line, duplicate and odd keys, unknown tags and mapping keys are refused naming the file', () => {
  const { dir, cleanup } = tempDir('tq-hostile-');
  const refused = (name: string, text: string, message: RegExp): void => {
    const path = configFile(dir, name, text);
    assert.throws(() => readConfigFile(path), (e: Error) => {
      assert.ok(e instanceof ConfigError, String(e));
      assert.ok(e.message.startsWith(`${path}: `) && !e.message.includes('\n'), e.message);
      assert.match(e.message, message);
      return true;
    });
  };
  try {
    refused('broken.yaml', 'model: [resnet20\nepochs: 2\n', /not valid YAML: .* at line \d+, column \d+:$/);
    refused('broken.json', '{\n"model": "resnet20",,\n}', /not valid JSON: /);
    refused('twice.json', '{"lr": 0.1, "epochs": 3, "lr": 10}', /key "lr" appears twice in the top-level object/);
    refused('nested.json', '{"schedule": {"kind": "cosine", "kind": "constant"}}', /key "kind" appears twice in the object at \$\.schedule/);
    refused('twice.yaml', 'lr: 0.1\nlr: 10\n', /not valid YAML: Map keys must be unique/);
    refused('tag.yaml', 'epochs: !!binary 3\nmodel: !custom resnet20\n', /not valid YAML: /);
    refused('key.yaml', '? [model, dataset]\n: resnet20\n', /not valid YAML: a key at line 1 is a list or mapping, not a name/);
    refused('control.json', '{"mo\\ndel": "resnet20"}', /key "mo\\ndel" holds a line break or control character/);
    refused('deep.json', `${'['.repeat(100)}${']'.repeat(100)}`, /nested more than 64 levels deep/);
    assert.deepEqual(readConfigFile(configFile(dir, 'fine.yaml', 'model: resnet20\nschedule: { kind: cosine }\n')), { model: 'resnet20', schedule: { kind: 'cosine' } });
  } finally {
    cleanup();
  }
});
