/**
 * The drop-in options of the C export (`--name`, `--arena`, `--section`) and their checks: a symbol
 * prefix must make valid, unreserved C identifiers, and a section name must be one the assembler's
 * `.section` directive and the linker take for writable RAM. The checks return the problem as one
 * line naming the flag, so the command line can refuse before it lowers or writes anything and
 * generateC refuses the same values the same way.
 */

/** Where the arena lives: a static array in the generated source, or memory the caller passes to NAME_infer. */
export type ArenaPlacement = 'static' | 'caller';
export const ARENA_PLACEMENTS: readonly ArenaPlacement[] = ['static', 'caller'];

/** The prefix of the default build (tq_infer, TQ_CLASSES): the one the runtime's own identifiers use too. */
export const DEFAULT_PREFIX = 'tq';

/** C99 and C11 keywords (a header may be compiled as either). */
const C_KEYWORDS = new Set(
  (
    'auto break case char const continue default do double else enum extern float for goto if inline int long register restrict return short ' +
    'signed sizeof static struct switch typedef union unsigned void volatile while _Alignas _Alignof _Atomic _Bool _Complex _Generic _Imaginary ' +
    '_Noreturn _Static_assert _Thread_local'
  ).split(' '),
);

/** Section name prefixes of code, constants, thread-local data and metadata: never writable RAM. */
const NOT_RAM = ['.text', '.rodata', '.init', '.fini', '.ctors', '.dtors', '.preinit_array', '.init_array', '.fini_array', '.tdata', '.tbss', '.ARM', '.debug', '.comment', '.note', '.eh_frame', '.gnu', '.vectors', '.data.rel.ro'];

/** What is wrong with `--name NAME`, or null. */
export function nameProblem(name: string): string | null {
  const flag = `--name ${JSON.stringify(name)}`;
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) return `${flag}: not a C identifier (letters, digits and '_', not starting with a digit)`;
  if (C_KEYWORDS.has(name)) return `${flag}: a C keyword`;
  if (name.startsWith('_')) return `${flag}: starts with '_' (the header guard ${name.toUpperCase()}_H would be an identifier reserved for the compiler)`;
  if (/^tq_/i.test(name)) return `${flag}: the prefix tq_ is the generated runtime's own (tq alone is the default)`;
  return null;
}

/** What is wrong with `--section NAME`, or null. */
export function sectionProblem(section: string): string | null {
  const flag = `--section ${JSON.stringify(section)}`;
  if (!/^[.A-Za-z_][A-Za-z0-9_.]*$/.test(section)) return `${flag}: a section name is letters, digits, '_' and '.', not starting with a digit (what the assembler's .section directive takes unquoted)`;
  const reserved = NOT_RAM.find((p) => section === p || section.startsWith(`${p}.`));
  if (reserved) return `${flag}: ${reserved} sections hold code, constants or metadata; the arena needs writable RAM (e.g. .bss.tq)`;
  return null;
}

export interface DropInOptions {
  readonly name?: string;
  readonly arena?: ArenaPlacement;
  readonly section?: string;
}

/** The first problem of a set of drop-in options, or null. */
export function dropInProblem(o: DropInOptions): string | null {
  if (o.name !== undefined) {
    const p = nameProblem(o.name);
    if (p) return p;
  }
  if (o.arena !== undefined && !ARENA_PLACEMENTS.includes(o.arena)) return `--arena must be one of ${ARENA_PLACEMENTS.join(', ')}, got "${o.arena}"`;
  if (o.section !== undefined) {
    if (o.arena === 'caller') return `--section ${o.section} with --arena caller: the caller places its own arena (--section applies to --arena static)`;
    return sectionProblem(o.section);
  }
  return null;
}
