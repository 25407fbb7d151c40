#!/usr/bin/env node
/**
 * The `tinyquant` command line: dispatch, help and version, and how errors end the process (one
 * line on stderr; exit code 2 usage, 3 input, 1 runtime; src/cli/errors.ts).
 */
import { TINYQUANT_VERSION } from '../package.js';
import { UsageError, helpText } from './args.js';
import { commandList, commandsUnder, findCommand } from './commands.js';
import { errorLine, exitCode } from './errors.js';

const USAGE = `usage: tinyquant <command> [options]

commands:
${commandList()}

tinyquant help <command> (or <command> --help) lists a command's options; tinyquant --version prints the version.
Every command takes --debug (print an error's stack trace). Exit codes: 0 done, 1 runtime error, 2 usage error, 3 bad input.`;

/** The help of a command, or of the group of commands a word names ('bench'). */
function helpFor(words: string[]): string {
  const found = findCommand(words);
  if (found && found.rest.length === 0) return helpText(found.command.spec);
  const group = commandsUnder(words[0]);
  if (words.length === 1 && group.length > 0) return `usage: tinyquant ${words[0]} <${group.map((c) => c.spec.name.split(' ')[1]).join('|')}> [options]\n\n${commandList(group)}`;
  throw new UsageError(`help: no command "${words.join(' ')}" (tinyquant help lists the commands)`);
}

async function main(argv: string[]): Promise<void> {
  const [first] = argv;
  if (first === undefined || first === '--help' || first === '-h' || (first === 'help' && argv.length === 1)) {
    console.log(USAGE);
    return;
  }
  if (first === '--version' || first === '-v') {
    console.log(TINYQUANT_VERSION);
    return;
  }
  if (first === 'help') {
    console.log(helpFor(argv.slice(1)));
    return;
  }
  const found = findCommand(argv);
  if (!found) {
    const group = commandsUnder(first);
    if (group.length > 0 && (argv[1] === '--help' || argv[1] === '-h')) {
      console.log(helpFor([first]));
      return;
    }
    if (group.length > 0) throw new UsageError(`${first}: give one of ${group.map((c) => c.spec.name).join(', ')} (tinyquant help ${first})`);
    throw new UsageError(`unknown command "${first}" (tinyquant help lists the commands)`);
  }
  await found.command.run(found.rest);
}

const argv = process.argv.slice(2);
const end = argv.indexOf('--');
const debug = process.env.TINYQUANT_DEBUG === '1' || (end === -1 ? argv : argv.slice(0, end)).includes('--debug');

main(argv).catch((e: unknown) => {
  console.error(errorLine(e, debug));
  process.exitCode = exitCode(e);
});
