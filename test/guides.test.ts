import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import t, { type Test } from 'tap';
import { ExampleServices } from '../examples/services';
import pino from 'pino';
import { Gateway } from '../src/app';
import { loadConfigFile } from '../src/config/load';
import { parseCurl, runCurl, type CurlResult } from './helpers/curl';
import { freePort, startRedis, type TestRedis } from './helpers/redis';

/**
 * Every guide in docs/guides/ is run as a reader would: its configuration (the ```yaml block after a
 * `<!-- config -->` marker) with the example services behind it, then each ```console session in order,
 * each `$ ` command run and its printed output checked. Ports a guide names (8080 gateway, 9901 admin,
 * 3001-3005 example services, 6379 Redis) are moved to free ones, in the configuration and the commands.
 *
 * Output rules: `HTTP/1.1 NNN ...` checks the status; `name: value` lines right after it check that the
 * header is there and starts with the value (`...` ends a prefix); other lines must appear in the body in
 * order, `...` standing for anything. A `-w '%{http_code} '` loop prints its statuses on one line.
 */
const GUIDES = join(__dirname, '..', 'docs', 'guides');

interface Block {
  kind: 'config' | 'session';
  text: string;
  line: number;
}

function blocks(markdown: string): Block[] {
  const out: Block[] = [];
  const lines = markdown.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const fence = /^```(\w+)/.exec(lines[i]);
    if (!fence) continue;
    let end = i + 1;
    while (end < lines.length && !lines[end].startsWith('```')) end++;
    const text = lines.slice(i + 1, end).join('\n');
    if (fence[1] === 'yaml' && lines[i - 1]?.trim() === '<!-- config -->') out.push({ kind: 'config', text, line: i + 1 });
    if (fence[1] === 'console') out.push({ kind: 'session', text, line: i + 1 });
    i = end;
  }
  return out;
}

interface Command {
  line: string;
  expected: string[];
}

function commands(session: string): Command[] {
  const out: Command[] = [];
  for (const l of session.split('\n')) {
    if (l.startsWith('$ ')) out.push({ line: l.slice(2).trim(), expected: [] });
    else if (out.length) out[out.length - 1].expected.push(l);
  }
  return out;
}

/** A piece of expected text with `...` wildcards, as a regular expression. */
function pattern(text: string): RegExp {
  return new RegExp(text.split('...').map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('[\\s\\S]*?'));
}

function check(t: Test, what: string, result: CurlResult, expected: string[], statusLoop: boolean): void {
  const lines = expected.map((l) => l.trimEnd());
  while (lines.length && lines[lines.length - 1] === '') lines.pop();
  let i = 0;
  if (statusLoop) {
    t.equal(result.statuses.join(' '), (lines[0] ?? '').trim(), `${what}: statuses`);
    return;
  }
  const status = /^HTTP\/[\d.]+ (\d{3})/.exec(lines[0] ?? '');
  if (status) {
    t.equal(result.status, Number(status[1]), `${what}: status`);
    for (i = 1; i < lines.length && lines[i] !== ''; i++) {
      if (lines[i] === '...') continue;
      const colon = lines[i].indexOf(':');
      const name = lines[i].slice(0, colon).toLowerCase();
      const want = lines[i].slice(colon + 1).trim().split('...')[0];
      const got = result.headers[name];
      const value = Array.isArray(got) ? got.join(', ') : got;
      t.ok(value !== undefined && value.startsWith(want), `${what}: ${name} starts with "${want}" (got ${String(value)})`);
    }
  }
  for (const l of lines.slice(i)) {
    if (l === '' || l === '...') continue;
    t.match(result.body, pattern(l), `${what}: body has ${l}`);
  }
}

async function runGuide(t: Test, file: string): Promise<void> {
  const markdown = readFileSync(join(GUIDES, file), 'utf8');
  const parts = blocks(markdown);
  t.ok(parts.some((b) => b.kind === 'config'), 'the guide has a configuration');
  t.ok(parts.some((b) => b.kind === 'session'), 'the guide has a session');

  const services = await ExampleServices.start({ users: 0, orders: 0, catalog: 0, inventoryA: 0, inventoryB: 0 });
  t.teardown(() => services.close());
  const map = new Map<string, string>([
    ['8080', String(await freePort())],
    ['9901', String(await freePort())],
    ['3001', String(services.ports.users)],
    ['3002', String(services.ports.orders)],
    ['3003', String(services.ports.catalog)],
    ['3004', String(services.ports.inventoryA)],
    ['3005', String(services.ports.inventoryB)],
    ['3009', String(await freePort())],
  ]);
  let redis: TestRedis | undefined;
  if (parts.some((b) => b.text.includes(':6379'))) {
    redis = await startRedis();
    map.set('6379', String(redis.port));
    t.teardown(() => redis!.close());
  }
  const ports = (s: string): string =>
    s
      .replace(/(localhost|127\.0\.0\.1):(\d{4})\b/g, (_m, host: string, p: string) => `${host}:${map.get(p) ?? p}`)
      .replace(/\bport: (\d{4})\b/g, (_m, p: string) => `port: ${map.get(p) ?? p}`);

  const dir = mkdtempSync(join(tmpdir(), 'guide-'));
  const configFile = join(dir, 'gateway.yaml');
  let gateway: Gateway | undefined;
  t.teardown(() => gateway?.close());
  const vars: Record<string, string> = {};
  for (const part of parts) {
    if (part.kind === 'config') {
      writeFileSync(configFile, ports(part.text));
      if (!gateway) {
        // In-process on the file, as `gateway --config` runs it (the CLI itself is tested in cli.test.ts).
        gateway = new Gateway(loadConfigFile(configFile), { logger: pino({ level: 'silent' }), configFile, processMetrics: false });
        await gateway.listen();
      }
      continue;
    }
    for (const cmd of commands(part.text)) {
      const what = `line ${part.line}: ${cmd.line}`;
      const assign = /^(\w+)=(\S+)$/.exec(cmd.line);
      if (assign) {
        vars[assign[1]] = assign[2];
        continue;
      }
      const pause = /^sleep (\d+(?:\.\d+)?)$/.exec(cmd.line);
      if (pause) {
        await sleep(Number(pause[1]) * 1000);
        continue;
      }
      if (cmd.line.startsWith('kill -HUP ')) {
        // What the SIGHUP handler does (src/lifecycle/signals.ts).
        await gateway!.reloadFromSource('SIGHUP');
        continue;
      }
      const request = parseCurl(ports(cmd.line), vars);
      const result = await runCurl(request);
      check(t, what, result, cmd.expected, request.printsStatus);
    }
  }
}

const files = readdirSync(GUIDES).filter((f) => f.endsWith('.md')).sort();
t.ok(files.length >= 9, 'the guides the issue lists are all there');
for (const file of files) t.test(`docs/guides/${file}`, (t) => runGuide(t, file));
