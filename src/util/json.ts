/**
 * JSON.parse that refuses an object with a key twice. JSON.parse keeps the last value silently, and
 * neither it nor a reviver can tell; so after JSON.parse has checked the syntax, a small scan of the
 * text finds the first repeated key (the scan relies on the text being valid JSON).
 */

/** A key that appears twice in one object: `path` is where the object is (`$`, `$.a`, `$.a[2]`). */
export class DuplicateKeyError extends Error {
  constructor(
    readonly path: string,
    readonly key: string,
  ) {
    super(`key ${JSON.stringify(key)} appears twice in ${path === '$' ? 'the top-level object' : `the object at ${path}`}`);
    this.name = 'DuplicateKeyError';
  }
}

/** JSON.parse, then DuplicateKeyError when an object repeats a key (SyntaxError as JSON.parse gives for invalid JSON). */
export function parseJsonStrict(text: string): unknown {
  const value: unknown = JSON.parse(text);
  const duplicate = findDuplicateKey(text);
  if (duplicate) throw new DuplicateKeyError(duplicate.path, duplicate.key);
  return value;
}

interface Container {
  /** Keys seen so far (objects), or null (arrays). */
  keys: Set<string> | null;
  path: string;
  /** The object key or array index whose value comes next. */
  next: string | number;
}

/** The first repeated key of valid JSON text, or null. */
export function findDuplicateKey(text: string): { path: string; key: string } | null {
  const stack: Container[] = [];
  const childPath = (): string => {
    const top = stack[stack.length - 1];
    if (!top) return '$';
    return typeof top.next === 'number' ? `${top.path}[${top.next}]` : `${top.path}.${top.next}`;
  };
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      const end = stringEnd(text, i);
      const top = stack[stack.length - 1];
      if (top?.keys && isKey(text, end)) {
        const key = JSON.parse(text.slice(i, end + 1)) as string;
        if (top.keys.has(key)) return { path: top.path, key };
        top.keys.add(key);
        top.next = key;
      }
      i = end;
    } else if (c === '{' || c === '[') {
      stack.push({ keys: c === '{' ? new Set() : null, path: childPath(), next: 0 });
    } else if (c === '}' || c === ']') {
      stack.pop();
    } else if (c === ',') {
      const top = stack[stack.length - 1];
      if (top && typeof top.next === 'number') top.next++;
    }
  }
  return null;
}

/** Index of the closing quote of the string starting at `start`. */
function stringEnd(text: string, start: number): number {
  for (let i = start + 1; i < text.length; i++) {
    if (text[i] === '\\') i++;
    else if (text[i] === '"') return i;
  }
  return text.length;
}

/** A string is an object key when the next non-blank character is a colon. */
function isKey(text: string, end: number): boolean {
  let i = end + 1;
  while (i < text.length && ' \t\r\n'.includes(text[i])) i++;
  return text[i] === ':';
}
