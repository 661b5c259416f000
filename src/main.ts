#!/usr/bin/env -S node --max-semi-space-size=64
import pino from 'pino';
import { Gateway } from './app';
import { ConfigError, formatProblem, loadConfigFile } from './config/load';
import { configWarnings } from './config/warnings';
import { handleSignals } from './lifecycle/signals';
import { collectStartupGarbage } from './lifecycle/startup-gc';
import { keysCommand, KeysCommandError, KEYS_USAGE } from './plugins/auth/keys-cli';

const USAGE = `usage:
  gateway --config <file>      start the gateway
  gateway validate <file>      check a configuration file; exit 0 when valid, 1 otherwise
${KEYS_USAGE}`;

function fail(message: string): never {
  process.stderr.write(message.endsWith('\n') ? message : `${message}\n`);
  process.exit(1);
}

function printProblems(err: unknown): never {
  if (err instanceof ConfigError) {
    fail(`configuration is invalid:\n${err.problems.map((p) => `  ${formatProblem(p)}`).join('\n')}`);
  }
  throw err;
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
  const { port, adminPort } = await gateway.listen({ beforeListen: collectStartupGarbage });
  gateway.log.info({ port, adminPort, routes: config.routes.length }, 'gateway listening');
}

async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  if (cmd === 'validate') {
    if (rest.length !== 1) fail(USAGE);
    try {
      const cfg = loadConfigFile(rest[0]);
      process.stdout.write(`${rest[0]}: valid (${cfg.routes.length} routes, ${Object.keys(cfg.upstreams).length} upstreams)\n`);
      const warnings = configWarnings(cfg);
      if (warnings.length > 0) process.stderr.write(`warnings:\n${warnings.map((w) => `  ${formatProblem(w)}`).join('\n')}\n`);
    } catch (err) {
      printProblems(err);
    }
    return;
  }
  if (cmd === 'keys') {
    try {
      await keysCommand(rest, (s) => process.stdout.write(s));
    } catch (err) {
      if (err instanceof KeysCommandError) fail(err.message);
      printProblems(err);
    }
    return;
  }
  if (cmd === '--config' || cmd === '-c') {
    if (rest.length !== 1) fail(USAGE);
    return start(rest[0]);
  }
  if (cmd === '--help' || cmd === '-h') {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  fail(USAGE);
}

main(process.argv.slice(2)).catch((err: unknown) => {
  process.stderr.write(`gateway failed to start: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
