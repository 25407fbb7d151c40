/** Text from files put into one-line error messages: control characters (line breaks) written as escapes. */

const CONTROL = /[\u0000-\u001f\u007f]/;
const EVERY_CONTROL = new RegExp(CONTROL.source, 'g');

/** `text` with control characters as JSON-style escapes (\n, \u0000), so a message stays one line. */
export function printable(text: string): string {
  return text.replace(EVERY_CONTROL, (c) => JSON.stringify(c).slice(1, -1));
}

/** Whether `text` holds a line break or another control character. */
export function hasControlCharacters(text: string): boolean {
  return CONTROL.test(text);
}

/** A name from a file, in single quotes, printable. */
export function quoted(name: string): string {
  return `'${printable(name)}'`;
}
