import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import Ajv from 'ajv';
import t from 'tap';
import YAML from 'yaml';
import { ConfigError, loadConfigFile, parseConfig } from '../src/config/load';
import { NODE_FLAGS } from '../src/lifecycle/node-flags';
import { call } from './helpers/http';
import { freePort, startRedis } from './helpers/redis';

const ROOT = join(__dirname, '..');
const CHART = join(ROOT, 'charts', 'gateway');
const TEMPLATES = join(CHART, 'templates');
const MAIN = join(ROOT, 'src', 'main.ts');

type Values = Record<string, unknown> & {
  config: Record<string, any>;
  secretEnv: Record<string, { name: string; key: string } | null>;
  extraEnv: { name: string; value?: string }[];
  terminationGraceMarginSeconds: number;
};

const values = YAML.parse(readFileSync(join(CHART, 'values.yaml'), 'utf8')) as Values;
const schema = JSON.parse(readFileSync(join(CHART, 'values.schema.json'), 'utf8')) as Record<string, unknown>;
const templates = readdirSync(TEMPLATES).map((f) => ({ file: f, text: readFileSync(join(TEMPLATES, f), 'utf8') }));

/** Plausible values for the variables the chart maps from Secrets (each must pass the gateway's own checks). */
const SAMPLE_SECRETS: Record<string, string> = {
  JWT_SECRET: 'a-jwt-secret-of-at-least-thirty-two-bytes-0123456789',
  ADMIN_TOKEN: 'an-admin-token-0123456789',
  REDIS_URL: 'redis://127.0.0.1:6379',
};

/** The environment the Deployment gives the container: GATEWAY_REPLICAS, one variable per secretEnv entry, plus extraEnv. */
function chartEnv(overrides: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { GATEWAY_REPLICAS: String(values.replicaCount) };
  for (const [name, ref] of Object.entries(values.secretEnv)) if (ref) env[name] = SAMPLE_SECRETS[name] ?? 'x'.repeat(40);
  for (const e of values.extraEnv) env[e.name] = e.value ?? '';
  return { ...env, ...overrides };
}

function writeConfig(config: unknown): string {
  const file = join(mkdtempSync(join(tmpdir(), 'gw-chart-')), 'gateway.yaml');
  writeFileSync(file, YAML.stringify(config));
  return file;
}

function validateCli(file: string, env: NodeJS.ProcessEnv) {
  // PATH and HOME only: the chart's environment, not the test runner's.
  return spawnSync(process.execPath, ['--import', 'tsx', MAIN, 'validate', file], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
    timeout: 60000,
  });
}

const compileSchema = () => new Ajv({ strict: true, allowUnionTypes: true, allErrors: true }).compile(schema);

t.test('values.yaml validates against values.schema.json (draft-07, as the schema declares)', async (t) => {
  t.equal(schema.$schema, 'http://json-schema.org/draft-07/schema#');
  const validate = compileSchema();
  t.ok(validate(values), JSON.stringify(validate.errors, null, 2));
});

t.test('values.schema.json rejects what would break the chart', async (t) => {
  const validate = compileSchema();
  const bad = (mutate: (v: any) => void): string => {
    const v = structuredClone(values) as any;
    mutate(v);
    t.notOk(validate(v), 'rejected');
    return JSON.stringify(validate.errors);
  };
  t.match(bad((v) => (v.config.admin.host = '127.0.0.1')), '/config/admin/host');
  t.match(bad((v) => (v.config.admin.enabled = false)), '/config/admin/enabled');
  t.match(bad((v) => (v.replicas = 3)), 'additionalProperties');
  t.match(bad((v) => (v.secretEnv.JWT_SECRET = { name: 'gateway-secrets' })), 'key');
  t.match(bad((v) => (v.config.shutdown.drainDelayMs = '${DRAIN}')), '/config/shutdown/drainDelayMs');
  t.match(bad((v) => (v.podAntiAffinity = 'sometimes')), '/podAntiAffinity');
});

t.test('the gateway config in the default values passes `gateway validate` with the env the chart sets', async (t) => {
  const file = writeConfig(values.config);
  const ok = validateCli(file, chartEnv());
  t.equal(ok.status, 0, ok.stderr);
  t.match(ok.stdout, /valid \(1 routes, 1 upstreams\)/);

  // The secrets really come from the environment: without it the same file is refused, naming each variable.
  const missing = t.throws(() => loadConfigFile(file, {})) as ConfigError;
  t.ok(missing instanceof ConfigError);
  for (const name of Object.keys(values.secretEnv)) t.match(missing.message, `environment variable ${name} is not set`);

  const text = YAML.stringify(values.config);
  for (const [, name, def] of text.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}/g)) {
    if (def === undefined) t.ok(name in chartEnv(), `\${${name}} is set by the chart (secretEnv or extraEnv)`);
  }
});

t.test('the admin listener binds 0.0.0.0 in the chart (the gateway default is loopback)', async (t) => {
  t.equal(values.config.admin.host, '0.0.0.0', 'the kubelet probes from outside the pod');
  const withoutHost = structuredClone(values.config);
  delete withoutHost.admin.host;
  t.equal(parseConfig(withoutHost, { env: chartEnv() }).admin.host, '127.0.0.1', 'so the chart must say so explicitly');
});

/** Mirrors _helpers.tpl: the numbers the Deployment's shutdown settings come from. */
function shutdownFigures(config: Record<string, any>, margin: number) {
  const drain = config.shutdown?.drainDelayMs ?? 5000;
  const timeout = config.shutdown?.timeoutMs ?? 30000;
  const maxRequest = Math.max(0, ...Object.values<any>(config.upstreams ?? {}).map((u) => u.timeouts?.requestMs ?? 60000));
  const preStop = Math.ceil(drain / 1000);
  return { drain, timeout, maxRequest, preStop, grace: preStop + Math.ceil(timeout / 1000) + margin };
}

t.test('shutdown: preStop matches the drain delay, the grace period outlasts drain + the longest request', async (t) => {
  const f = shutdownFigures(values.config, values.terminationGraceMarginSeconds);
  t.ok(f.timeout >= f.drain + f.maxRequest, `shutdown.timeoutMs ${f.timeout} ≥ drain ${f.drain} + longest request ${f.maxRequest} (else the chart refuses to render)`);
  t.ok(f.grace * 1000 > f.preStop * 1000 + f.drain + f.maxRequest, `grace ${f.grace} s > preStop + drain + longest request`);
  t.equal(f.preStop * 1000, f.drain, 'the default drain delay is whole seconds, so the preStop sleep matches it exactly');

  const deployment = templates.find((x) => x.file === 'deployment.yaml')!.text;
  t.match(deployment, /terminationGracePeriodSeconds: \{\{ include "gateway.terminationGracePeriodSeconds" \. \}\}/);
  t.match(deployment, /command: \["sleep", "\{\{ \$preStop \}\}"\]/);
  const helpers = templates.find((x) => x.file === '_helpers.tpl')!.text;
  t.match(helpers, /dig "shutdown" "drainDelayMs" 5000/, 'defaults in the helpers are the gateway defaults');
  t.match(helpers, /dig "shutdown" "timeoutMs" 30000/);
  t.match(helpers, /dig "timeouts" "requestMs" 60000/);
  const defaults = parseConfig({ upstreams: { u: { targets: ['http://x'] } } }, { env: {} });
  t.same([defaults.shutdown.drainDelayMs, defaults.shutdown.timeoutMs, defaults.upstreams.u.timeouts.requestMs], [5000, 30000, 60000]);
});

t.test('templates: every .Values path exists in values.yaml, every include is defined, blocks are balanced', async (t) => {
  const defined = new Set<string>();
  for (const { text } of templates) for (const [, name] of text.matchAll(/\{\{-? define "([^"]+)"/g)) defined.add(name);
  for (const { file, text } of templates) {
    for (const [, name] of text.matchAll(/(?:include|template) "([^"]+)"/g)) t.ok(defined.has(name), `${file}: "${name}" is defined`);
    for (const [, path] of text.matchAll(/\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)/g)) {
      let node: unknown = values;
      for (const key of path.slice(1).split('.')) {
        t.ok(node !== null && typeof node === 'object' && key in (node as object), `${file}: .Values${path} exists in values.yaml`);
        node = (node as Record<string, unknown>)?.[key];
        if (node === null || node === undefined) break;
      }
    }
    const actions = [...text.matchAll(/\{\{-?\s*(if|range|with|define|end)\b/g)].map((m) => m[1]);
    t.equal(actions.filter((a) => a === 'end').length, actions.filter((a) => a !== 'end').length, `${file}: every block has its end`);
    t.equal((text.match(/\{\{/g) ?? []).length, (text.match(/\}\}/g) ?? []).length, `${file}: {{ and }} balance`);
  }
  for (const kind of ['Deployment', 'Service', 'ConfigMap', 'HorizontalPodAutoscaler', 'PodDisruptionBudget', 'ServiceMonitor']) {
    t.ok(templates.some((x) => x.text.includes(`kind: ${kind}`)), `a ${kind} template`);
  }
  const deployment = templates.find((x) => x.file === 'deployment.yaml')!.text;
  for (const needle of ['path: /healthz', 'path: /readyz', 'port: admin', 'checksum/config', 'podAntiAffinity', 'secretKeyRef', 'mountPath: /etc/gateway']) {
    t.ok(deployment.includes(needle), `the Deployment has ${needle}`);
  }
  t.equal(values.podAntiAffinity, 'soft', 'anti-affinity on by default');
  t.equal((values.securityContext as any).readOnlyRootFilesystem, true);
  t.equal((values.podSecurityContext as any).runAsNonRoot, true);
  const dashboard = templates.find((x) => x.file === 'dashboard-configmap.yaml')!.text;
  t.match(dashboard, /\.Files\.Get "dashboards\/gateway\.json"/);
  t.same(Object.keys((values.dashboard as any).labels), ['grafana_dashboard']);
  JSON.parse(readFileSync(join(CHART, 'dashboards', 'gateway.json'), 'utf8'));
});

t.test('the chart config boots: probes answer on the admin port, SIGTERM turns readiness off', async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.close());
  const [port, adminPort] = [await freePort(), await freePort()];
  const config = structuredClone(values.config);
  config.listen.port = port;
  config.admin.port = adminPort;
  const file = writeConfig(config);
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, '--config', file], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...chartEnv({ REDIS_URL: redis.url }) },
  });
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  for (let i = 0; i < 400 && !out.includes('gateway listening'); i++) await sleep(50);
  t.match(out, /gateway listening/);
  const admin = `http://127.0.0.1:${adminPort}`;
  t.equal((await call(admin, '/healthz')).status, 200);
  let ready = await call(admin, '/readyz');
  for (let i = 0; i < 40 && ready.status !== 200; i++) {
    await sleep(100);
    ready = await call(admin, '/readyz');
  }
  t.equal(ready.status, 200, ready.body);
  child.kill('SIGTERM');
  await sleep(200);
  t.equal((await call(admin, '/readyz')).status, 503, 'not ready while draining');
  t.equal((await call(admin, '/healthz')).status, 200, 'still live: the kubelet must not restart a draining pod');
});

t.test('Dockerfile: Node 22 slim, multi-stage, production dependencies only, non-root, the CLI command', async (t) => {
  const docker = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
  const lines = docker.split('\n').filter((l) => l.trim() && !l.trim().startsWith('#'));
  const froms = lines.filter((l) => /^FROM /i.test(l));
  t.ok(froms.length >= 2, 'multi-stage');
  for (const f of froms) t.match(f, /^FROM node:22-bookworm-slim\b/);
  const finalStage = lines.slice(lines.indexOf(froms[froms.length - 1]));
  t.ok(lines.slice(0, lines.indexOf(froms[froms.length - 1])).some((l) => /npm ci(?!.*--omit=dev)/.test(l)), 'the build stage installs dev dependencies');
  t.ok(finalStage.some((l) => /npm ci .*--omit=dev/.test(l)), 'the runtime stage installs production dependencies only');
  const user = finalStage.filter((l) => /^USER /.test(l)).pop();
  t.ok(user && !/^USER (root|0)\b/.test(user), `runs as a non-root user (${user})`);
  t.ok(finalStage.findIndex((l) => /^USER /.test(l)) < finalStage.findIndex((l) => /^CMD /.test(l)));
  const cmd = JSON.parse(finalStage.find((l) => /^CMD /.test(l))!.slice(4)) as string[];
  t.same(cmd, ['node', ...NODE_FLAGS, 'dist/src/main.js', '--config', '/etc/gateway/gateway.yaml'], 'the CLI with the gateway\'s Node flags');
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
  t.equal(pkg.bin.gateway, cmd[1 + NODE_FLAGS.length], 'the compiled CLI entry');
  const flags = NODE_FLAGS.join(' ');
  t.equal(readFileSync(join(ROOT, 'src', 'main.ts'), 'utf8').split('\n')[0], `#!/usr/bin/env -S node ${flags}`, 'the bin runs with the same flags');
  t.match(pkg.scripts.start, `node ${flags} dist/src/main.js`, 'npm start too');
  t.match(readFileSync(join(ROOT, 'bench', 'scenarios.ts'), 'utf8'), /\.\.\.NODE_FLAGS, \.\.\.preload, join\(DIST, 'src\/main\.js'\)/, 'and the bench');
  t.match(readFileSync(join(ROOT, 'bench', 'scenarios.ts'), 'utf8'), /join\(DIST, 'src\/main\.js'\), '--config'/, 'the command the bench starts');
  const configMap = templates.find((x) => x.file === 'configmap.yaml')!.text;
  t.match(configMap, /gateway\.yaml: \|/, 'the ConfigMap key the image reads, mounted at /etc/gateway');
  t.notMatch(docker, /^\s*(ENV|ARG)\s+\S*(SECRET|TOKEN|PASSWORD|REDIS_URL)/im, 'no secrets baked in');

  const ignore = readFileSync(join(ROOT, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim());
  for (const entry of ['node_modules', 'dist', '.git', '.env']) t.ok(ignore.includes(entry), `.dockerignore lists ${entry}`);
});

t.test('everything src/ imports at run time is a production dependency (the image has no dev dependencies)', async (t) => {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
  const prod = new Set(Object.keys(pkg.dependencies));
  const files = (readdirSync(join(ROOT, 'src'), { recursive: true }) as string[]).filter((f) => f.endsWith('.ts'));
  // reference.ts generates the README (npm run docs) and is never loaded by the gateway.
  for (const f of files.filter((x) => !x.endsWith('config/reference.ts'))) {
    const text = readFileSync(join(ROOT, 'src', f), 'utf8');
    for (const [, spec] of text.matchAll(/^(?!import type)[^\n]*?(?:from\s+|require\()'([^'.][^']*)'/gm)) {
      if (spec.startsWith('node:')) continue;
      const name = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0];
      t.ok(prod.has(name), `src/${f} imports ${name}: a production dependency`);
    }
  }
});
