import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import YAML from 'yaml';
import { convertKong } from './kong/convert';

export const IMPORT_USAGE = `  gateway import kong <kong.yml> [--out <file>]
                               convert a Kong declarative file (decK); what could not be
                               converted is listed on stderr`;

/** A mistake on the command line (exit 2) or an unreadable input (exit 1). */
export class ImportCommandError extends Error {
  constructor(
    message: string,
    readonly usage = false,
  ) {
    super(message);
  }
}

interface Io {
  out(s: string): void;
  err(s: string): void;
}

/** `gateway import kong <file> [--out <file>]`. */
export function importCommand(argv: string[], io: Io): void {
  const positional: string[] = [];
  let outFile: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--out' || a === '-o') {
      outFile = argv[++i];
      if (outFile === undefined || outFile.startsWith('-')) throw new ImportCommandError(`option ${a} needs a file`, true);
    } else if (a.startsWith('--out=')) outFile = a.slice(6);
    else if (a.startsWith('-')) throw new ImportCommandError(`unknown option ${a}`, true);
    else positional.push(a);
  }
  const [kind, file, ...extra] = positional;
  if (kind === undefined) throw new ImportCommandError('import needs a kind (kong) and a file', true);
  if (kind !== 'kong') throw new ImportCommandError(`cannot import from "${kind}" (kong only)`, true);
  if (file === undefined) throw new ImportCommandError('import kong needs a file', true);
  if (extra.length) throw new ImportCommandError(`unexpected argument ${extra[0]}`, true);

  let doc: unknown;
  try {
    doc = YAML.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new ImportCommandError(`${file}: ${(err as Error).message}`);
  }
  const { config, issues } = convertKong(doc);
  // The list goes into the file too, so whoever reviews the converted configuration sees it.
  const header = [
    `# Converted from ${file} by \`gateway import kong\`. Check it with \`gateway validate\`.`,
    ...(issues.length ? ['# Not converted, or converted approximately (paths in the Kong file):', ...issues.map((i) => `#   ${i.path}: ${i.message}`.replace(/[\r\n\u2028\u2029]+/g, ' '))] : []),
    '',
  ].join('\n');
  const text = header + YAML.stringify(config, { lineWidth: 0, aliasDuplicateObjects: false });
  if (outFile === undefined) io.out(text);
  else {
    const tmp = `${outFile}.tmp-${process.pid}`;
    writeFileSync(tmp, text);
    renameSync(tmp, outFile);
  }
  if (issues.length) {
    io.err(`${file}: ${issues.length} item${issues.length === 1 ? '' : 's'} not converted or converted approximately:\n${issues.map((i) => `  ${i.path}: ${i.message}`).join('\n')}\n`);
  }
}
