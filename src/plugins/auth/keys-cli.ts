import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import YAML from 'yaml';
import { loadConfigFile } from '../../config/load';
import type { GatewayConfig } from '../../config/schema';
import { generateKey, parseExpiry, PREFIX_PATTERN, type KeyRecord } from './api-keys';
import { RedisKeyStore } from './redis-keys';

export const KEYS_USAGE = `  gateway keys create <consumer> [--expires <90d|ISO date>] --config <file>
                               create an API key (shown once)
  gateway keys list <consumer> --config <file>
                               list a consumer's keys (prefix, created, expires)
  gateway keys revoke <prefix> --config <file>
                               revoke a key`;

/** Thrown for a mistake on the command line or a refused operation; main prints it and exits 1. */
export class KeysCommandError extends Error {}

interface Args {
  verb: string;
  subject: string;
  config: string;
  expires: string | undefined;
}

function parseArgs(argv: string[]): Args {
  const positional: string[] = [];
  let config: string | undefined;
  let expires: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--config' || a === '-c') config = argv[++i];
    else if (a === '--expires') expires = argv[++i];
    else positional.push(a);
  }
  const [verb, subject, ...extra] = positional;
  if (!['create', 'list', 'revoke'].includes(verb) || !subject || extra.length || !config) throw new KeysCommandError(`usage:\n${KEYS_USAGE}`);
  if (expires !== undefined && verb !== 'create') throw new KeysCommandError('--expires goes with create only');
  return { verb, subject, config, expires };
}

const iso = (ms: number | null) => (ms === null ? 'never' : new Date(ms).toISOString());

function table(records: KeyRecord[], now: number): string {
  if (records.length === 0) return 'no keys\n';
  const rows = records.map((r) => [r.prefix, r.created === null ? '-' : iso(r.created), iso(r.expires), r.expires !== null && now >= r.expires ? 'expired' : 'active']);
  return ['PREFIX          CREATED                   EXPIRES                   STATUS', ...rows.map((r) => `${r[0].padEnd(16)}${r[1].padEnd(26)}${r[2].padEnd(26)}${r[3]}`)].join('\n') + '\n';
}

function createdMessage(key: string, r: KeyRecord, where: string): string {
  return `key:      ${key}\nprefix:   ${r.prefix}\nconsumer: ${r.consumer}\nexpires:  ${iso(r.expires)}\n\nThe key is shown this once; only its SHA-256 is stored (${where}).\n`;
}

/** Rewrites the configuration file in place (comments kept), via a temporary file and a rename. */
function editConfig(file: string, edit: (doc: YAML.Document) => void): void {
  const doc = YAML.parseDocument(readFileSync(file, 'utf8'));
  edit(doc);
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, doc.toString());
  renameSync(tmp, file);
}

function consumerIndex(cfg: GatewayConfig, id: string): number {
  const i = cfg.consumers.findIndex((c) => c.id === id);
  if (i < 0) throw new KeysCommandError(`no consumer "${id}" in the configuration`);
  return i;
}

async function memoryStore(args: Args, cfg: GatewayConfig, out: (s: string) => void): Promise<void> {
  const now = Date.now();
  if (args.verb === 'list') {
    const c = cfg.consumers[consumerIndex(cfg, args.subject)];
    const records = c.apiKeys.map((k) => ({
      consumer: c.id,
      prefix: k.prefix,
      created: k.created === undefined ? null : Date.parse(k.created),
      expires: k.expires === undefined ? null : Date.parse(k.expires),
    }));
    out(table(records, now));
    return;
  }
  if (args.verb === 'create') {
    const i = consumerIndex(cfg, args.subject);
    const expires = args.expires === undefined ? null : parseExpiry(args.expires, now);
    const k = generateKey();
    const entry: Record<string, string> = { prefix: k.prefix, sha256: k.sha256, created: new Date(now).toISOString() };
    if (expires !== null) entry.expires = new Date(expires).toISOString();
    editConfig(args.config, (doc) => {
      const path = ['consumers', i, 'apiKeys'];
      const seq = doc.getIn(path);
      if (YAML.isSeq(seq)) seq.add(doc.createNode(entry));
      else doc.setIn(path, doc.createNode([entry]));
    });
    out(createdMessage(k.key, { consumer: args.subject, prefix: k.prefix, created: now, expires }, `in ${args.config}; reload the gateways (SIGHUP or POST /admin/reload) to use it`));
    return;
  }
  for (const [i, c] of cfg.consumers.entries()) {
    const j = c.apiKeys.findIndex((k) => k.prefix === args.subject);
    if (j < 0) continue;
    editConfig(args.config, (doc) => doc.deleteIn(['consumers', i, 'apiKeys', j]));
    out(`revoked ${args.subject} (consumer ${c.id}) in ${args.config}; reload the gateways (SIGHUP or POST /admin/reload) to apply\n`);
    return;
  }
  throw new KeysCommandError(`no key with prefix ${args.subject}`);
}

async function redisStore(args: Args, cfg: GatewayConfig, out: (s: string) => void): Promise<void> {
  const store = new RedisKeyStore(cfg.auth.apiKeys, { warn: () => undefined });
  try {
    try {
      await store.open();
    } catch (err) {
      throw new KeysCommandError(`cannot reach the key store at ${cfg.auth.apiKeys.redis.url}: ${(err as Error).message}`);
    }
    if (args.verb === 'list') {
      consumerIndex(cfg, args.subject);
      out(table(await store.list(args.subject), Date.now()));
    } else if (args.verb === 'create') {
      consumerIndex(cfg, args.subject);
      const expires = args.expires === undefined ? null : parseExpiry(args.expires);
      const { key, record } = await store.create(args.subject, expires);
      out(createdMessage(key, record, 'in Redis; every gateway uses it at once'));
    } else {
      if (!(await store.revoke(args.subject))) throw new KeysCommandError(`no key with prefix ${args.subject}`);
      out(`revoked ${args.subject}; every gateway refuses it within a second\n`);
    }
  } finally {
    await store.close();
  }
}

/** `gateway keys ...`: the key lifecycle against the store the configuration names. */
export async function keysCommand(argv: string[], out: (s: string) => void): Promise<void> {
  const args = parseArgs(argv);
  if (args.verb === 'revoke' && !PREFIX_PATTERN.test(args.subject)) throw new KeysCommandError('a key prefix looks like gk_abcdefgh (ik_abcdefgh for an imported key)');
  const cfg = loadConfigFile(args.config);
  try {
    if (cfg.auth.apiKeys.store === 'redis') await redisStore(args, cfg, out);
    else await memoryStore(args, cfg, out);
  } catch (err) {
    if (err instanceof KeysCommandError) throw err;
    throw new KeysCommandError((err as Error).message);
  }
}
