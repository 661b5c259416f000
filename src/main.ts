#!/usr/bin/env -S node --max-semi-space-size=64
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { Gateway } from './app';
import { renderJsonSchema } from './config/json-schema';
import { ConfigError, formatProblem, loadConfigFile } from './config/load';
import { configWarnings } from './config/warnings';
import { handleSignals } from './lifecycle/signals';
import { collectStartupGarbage } from './lifecycle/startup-gc';
import { importCommand, ImportCommandError, IMPORT_USAGE } from './import';
import { keysCommand, KeysCommandError, KEYS_USAGE } from './plugins/auth/keys-cli';

const USAGE = `usage:
  gateway --config <file>      start the gateway
  gateway validate <file>      check a configuration file
  gateway schema               print the JSON Schema of the configuration file
  gateway --version            print the version
${KEYS_USAGE}
${IMPORT_USAGE}

exit status: 0 success, 1 invalid configuration or failed command, 2 usage error`;

/** Exit statuses, so scripts can tell a bad configuration from a bad command line. */
const EXIT_INVALID = 1;
const EXIT_USAGE = 2;

function fail(message: string, code = EXIT_INVALID): never {
  process.stderr.write(message.endsWith('\n') ? message : `${message}\n`);
  process.exit(code);
}

function usageError(message: string): never {
  fail(`gateway: ${message}\n${USAGE}`, EXIT_USAGE);
}

/** Rejects what is left of the command line once a command took its arguments. */
function noMore(args: string[]): void {
  const flag = args.find((a) => a.startsWith('-'));
  if (flag) usageError(`unknown option ${flag}`);
  if (args.length) usageError(`unexpected argument ${args[0]}`);
}

function printProblems(err: unknown): never {
  if (err instanceof ConfigError) {
    const lines = err.problems.map((p) => `  ${formatProblem(p).replace(/\n/g, '\n  ')}`);
    fail(`${err.source ? `${err.source}: ` : ''}configuration is invalid:\n${lines.join('\n')}`);
  }
  throw err;
}

/** The version in package.json, which sits two levels up from dist/src/main.js and one up from src/main.ts. */
function version(): string {
  for (const dir of [join(__dirname, '..'), join(__dirname, '..', '..')]) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'api-gateway' && pkg.version) return pkg.version;
    } catch {
      // Not this directory.
    }
  }
  return 'unknown';
}

/** `--config <file>`, `--config=<file>`, `-c <file>`: the file, and what follows it. */
function configArg(flag: string, rest: string[]): [string, string[]] {
  const eq = flag.indexOf('=');
  if (eq >= 0) return [flag.slice(eq + 1) || usageError(`option ${flag.slice(0, eq)} needs a file`), rest];
  const [file, ...more] = rest;
  if (file === undefined || file.startsWith('-')) usageError(`option ${flag} needs a file`);
  return [file, more];
}

async function start(file: string): Promise<void> {
  let config;
  try {
    config = loadConfigFile(file);
  } catch (err) {
    printProblems(err);
  }
  // Buffered asynchronous stdout: one write per 4 KiB of log lines instead of one per line (a
  // per-line async write costs a thread-pool round trip per request), flushed every 200 ms so lines
  // never wait long when traffic is light.
  const destination = pino.destination({ dest: 1, sync: false, minLength: 4096 });
  setInterval(() => destination.flush(), 200).unref();
  const logger = pino({ level: config.log.level }, destination);
  const gateway = new Gateway(config, { logger, configFile: file });
  handleSignals(gateway, (code) => {
    destination.flushSync();
    process.exit(code);
  });
  const { port, tlsPort, adminPort } = await gateway.listen({ beforeListen: collectStartupGarbage });
  gateway.log.info({ port, tlsPort, adminPort, routes: config.routes.length }, 'gateway listening');
}

async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined) usageError('no command given');
  if (cmd === 'validate') {
    const [file, ...more] = rest;
    if (file === undefined || file.startsWith('-')) usageError(file === undefined ? 'validate needs a file' : `unknown option ${file}`);
    noMore(more);
    try {
      const cfg = loadConfigFile(file);
      process.stdout.write(`${file}: valid (${cfg.routes.length} routes, ${Object.keys(cfg.upstreams).length} upstreams)\n`);
      const warnings = configWarnings(cfg);
      if (warnings.length > 0) process.stderr.write(`warnings:\n${warnings.map((w) => `  ${formatProblem(w)}`).join('\n')}\n`);
    } catch (err) {
      printProblems(err);
    }
    return;
  }
  if (cmd === 'schema') {
    noMore(rest);
    process.stdout.write(renderJsonSchema());
    return;
  }
  if (cmd === 'keys') {
    const valued = ['--config', '-c', '--expires'];
    const flag = rest.find((a, i) => a.startsWith('-') && !valued.includes(a) && !valued.includes(rest[i - 1]));
    if (flag) usageError(`unknown option ${flag}`);
    try {
      await keysCommand(rest, (s) => process.stdout.write(s));
    } catch (err) {
      if (err instanceof KeysCommandError) fail(err.message, err.message.startsWith('usage:') ? EXIT_USAGE : EXIT_INVALID);
      printProblems(err);
    }
    return;
  }
  if (cmd === 'import') {
    try {
      importCommand(rest, { out: (s) => process.stdout.write(s), err: (s) => process.stderr.write(s) });
    } catch (err) {
      if (err instanceof ImportCommandError) err.usage ? usageError(err.message) : fail(err.message);
      throw err;
    }
    return;
  }
  if (cmd === '--config' || cmd === '-c' || cmd.startsWith('--config=')) {
    const [file, more] = configArg(cmd, rest);
    noMore(more);
    return start(file);
  }
  if (cmd === '--version' || cmd === '-v') {
    noMore(rest);
    process.stdout.write(`${version()}\n`);
    return;
  }
  if (cmd === '--help' || cmd === '-h') {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  usageError(cmd.startsWith('-') ? `unknown option ${cmd}` : `unknown command ${cmd}`);
}

main(process.argv.slice(2)).catch((err: unknown) => {
  process.stderr.write(`gateway failed to start: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
