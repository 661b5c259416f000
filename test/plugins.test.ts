import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import t from 'tap';
import { ConfigError, loadConfigFile, parseConfig } from '../src/config/load';
import { ConfigSchema, RouteSchema, type GatewayConfig, type RouteConfig } from '../src/config/schema';
import type { RouteCacheConfig } from '../src/plugins/cache/schema';
import type { UserPluginConfig } from '../src/plugins/user/schema';
import { PLUGINS } from '../src/plugins';
import { PLUGIN_FIELDS } from '../src/plugins/fields';
import { startGateway, withTestDefaults, type TestConfig } from './helpers/gateway';
import { call } from './helpers/http';
import { startUpstream } from './helpers/upstream';

const ROOT = join(__dirname, '..');
const EXAMPLE = join(ROOT, 'examples', 'plugins', 'add-header.js');
const dir = mkdtempSync(join(tmpdir(), 'gw-plugins-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

/** Writes a plugin module into the test directory and returns its path. */
function pluginFile(name: string, source: string): string {
  const file = join(dir, name);
  writeFileSync(file, source);
  return file;
}

/** A plugin that records its resource's life in a file and says, in a response header, what it saw. */
const PROBE = pluginFile(
  'probe.js',
  `'use strict';
const { appendFileSync } = require('node:fs');
module.exports = {
  name: 'probe',
  schema: { options: { type: 'object', additionalProperties: false, required: ['log'], properties: {
    log: { type: 'string', description: 'File the resource writes its life to.' },
    tag: { type: 'string', default: 'one', description: 'Written with every event.' } } } },
  create(ctx) {
    const say = (what) => appendFileSync(ctx.options.log, ctx.options.tag + ' ' + what + '\\n');
    ctx.addResource({ name: 'probe', init: async () => say('init'), close: async () => say('close') });
    return {
      stepFor(route) {
        return {
          name: 'probe',
          run(req) {
            req.addResponseHeader('x-probe-' + ctx.name, route.name + ' ' + (req.identity ? req.identity.consumerId : 'anonymous') + ' ' + ctx.options.tag);
            return true;
          },
        };
      },
    };
  },
};
`,
);

function config(extra: TestConfig, upstream: string): TestConfig {
  return { upstreams: { up: { targets: [upstream] } }, ...extra };
}

function problemsOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.map((p) => `${p.path}: ${p.message}`);
    throw err;
  }
  return [];
}

const parse = (cfg: TestConfig) => parseConfig(withTestDefaults({ upstreams: { up: { targets: ['http://127.0.0.1:1'] } }, ...cfg }));

t.test('the configuration schema is assembled from every plugin in the list', async (t) => {
  t.equal(PLUGINS.length, PLUGIN_FIELDS.length);
  PLUGINS.forEach((p, i) => {
    t.equal(p.schema, PLUGIN_FIELDS[i], `${p.name}: its fields are the ones config/ assembles`);
    for (const key of Object.keys(p.schema.top)) t.equal(ConfigSchema.properties[key as keyof typeof ConfigSchema.properties], p.schema.top[key as never], `${p.name}: top-level ${key}`);
    for (const key of Object.keys(p.schema.route)) t.equal(RouteSchema.properties[key as keyof typeof RouteSchema.properties], p.schema.route[key as never], `${p.name}: route ${key}`);
  });
  // The assembled types stay precise (checked by the compiler: `npm test` type-checks the tests first).
  type Equals<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
  const precise: [Equals<RouteConfig['cache'], RouteCacheConfig | undefined>, Equals<GatewayConfig['plugins'], UserPluginConfig[]>, Equals<RouteConfig['plugins'], string[]>] = [true, true, true];
  t.ok(precise);
  // Every built-in plugin owns at least one field, so none was left out by accident.
  t.same(PLUGINS.filter((p) => Object.keys(p.schema.top).length + Object.keys(p.schema.route).length === 0).map((p) => p.name), []);
});

t.test('config/ imports no plugin by name, and no plugin imports the config loader or schema', async (t) => {
  const folders = readdirSync(join(ROOT, 'src', 'plugins'), { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name);
  t.ok(folders.length >= 5, `plugin folders: ${folders.join(', ')}`);
  const importsOf = (file: string) => [...readFileSync(file, 'utf8').matchAll(/from '([^']+)'/g)].map((m) => m[1]);
  for (const f of readdirSync(join(ROOT, 'src', 'config'))) {
    const named = importsOf(join(ROOT, 'src', 'config', f)).filter((s) => folders.some((name) => s.startsWith(`../plugins/${name}`)));
    t.same(named, [], `src/config/${f}`);
  }
  for (const folder of folders) {
    for (const f of readdirSync(join(ROOT, 'src', 'plugins', folder))) {
      // The key CLI is a command of its own that reads a configuration file.
      if (f === 'keys-cli.ts') continue;
      const back = importsOf(join(ROOT, 'src', 'plugins', folder, f)).filter((s) => /config\/(load|schema)$/.test(s));
      t.same(back, [], `src/plugins/${folder}/${f}`);
    }
  }
});

/** The strongly connected components (import cycles) of src/, type-only imports included. */
function importCycles(): string[][] {
  const files: string[] = [];
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (p.endsWith('.ts')) files.push(p);
    }
  };
  walk(join(ROOT, 'src'));
  const edges = new Map<string, string[]>();
  for (const f of files) {
    const out: string[] = [];
    for (const m of readFileSync(f, 'utf8').matchAll(/^(?:import|export)\b[^'";]*?from '(\.[^']*)'/gms)) {
      const base = join(dirname(f), m[1]);
      const hit = [`${base}.ts`, join(base, 'index.ts')].find((c) => files.includes(c));
      if (hit) out.push(hit);
    }
    edges.set(f, out);
  }
  // Tarjan's algorithm.
  let next = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const cycles: string[][] = [];
  const visit = (v: string): void => {
    index.set(v, next);
    low.set(v, next++);
    stack.push(v);
    onStack.add(v);
    for (const w of edges.get(v)!) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        scc.push(relative(ROOT, w));
      } while (w !== v);
      if (scc.length > 1) cycles.push(scc.sort());
    }
  };
  for (const f of files) if (!index.has(f)) visit(f);
  return cycles;
}

t.test('no import cycle runs through config/ or between plugins and the rest of the gateway', async (t) => {
  for (const scc of importCycles()) {
    t.notOk(scc.some((f) => f.startsWith('src/config/')), `a cycle through config/: ${scc.join(' ')}`);
    const folders = new Set(scc.filter((f) => f.startsWith('src/plugins/')).map((f) => f.split('/').slice(0, 3).join('/')));
    const outside = scc.some((f) => !f.startsWith('src/plugins/'));
    t.ok(folders.size === 0 || (folders.size === 1 && !outside), `a cycle stays inside one plugin folder: ${scc.join(' ')}`);
  }
});

t.test('a user plugin module loads relative to the configuration file, with its options validated and defaulted', async (t) => {
  const sub = mkdtempSync(join(dir, 'conf-'));
  const file = join(sub, 'gateway.yaml');
  writeFileSync(
    file,
    [
      'upstreams: { up: { targets: ["http://127.0.0.1:1"] } }',
      'plugins:',
      `  - module: ${relative(sub, EXAMPLE)}`,
      '    options: { header: X-Tenant, value: acme }',
      'routes:',
      '  - { name: r, match: { prefix: /r }, upstream: up, plugins: [add-header] }',
    ].join('\n'),
  );
  const cfg = loadConfigFile(file, {});
  t.equal(cfg.plugins[0].module, EXAMPLE, 'the module path is resolved against the file, not the working directory');
  t.equal(cfg.plugins[0].name, 'add-header', "the name defaults to the module's");
  t.equal(cfg.plugins[0].phase, 'request');
  t.same(cfg.plugins[0].options, { header: 'X-Tenant', value: 'acme', to: 'response' }, "the module's defaults are applied");
  t.same(cfg.routes[0].plugins, ['add-header']);
});

t.test('user plugin problems name the field', async (t) => {
  const notAPlugin = pluginFile('not-a-plugin.js', "module.exports = { name: 'x' };\n");
  const broken = pluginFile('broken.js', 'module.exports = {;\n');
  t.same(
    problemsOf(() => parse({ plugins: [{ module: EXAMPLE, options: { header: 'Bad Name', to: 'sideways', extra: 1 } }] })).sort(),
    [
      'plugins[0].options.extra: unknown key',
      'plugins[0].options.value: is required',
      'plugins[0].options.header: expected a header name such as X-Tenant (got "Bad Name")',
      'plugins[0].options.to: expected one of upstream or response (got "sideways")',
    ].sort(),
    'schema problems carry the path under plugins[0].options',
  );
  t.same(
    problemsOf(() => parse({ plugins: [{ module: EXAMPLE, options: { header: 'X-A', value: 'a\nb' } }] })),
    ['plugins[0].options.value: may not contain CR, LF or NUL'],
    "the module's own check, under the same path",
  );
  const missing = problemsOf(() => parse({ plugins: [{ module: './no-such-plugin.js' }] }));
  t.equal(missing.length, 1);
  t.match(missing[0], /^plugins\[0\]\.module: cannot find module "\.\/no-such-plugin\.js" \(relative paths start from /);
  t.match(problemsOf(() => parse({ plugins: [{ module: notAPlugin }] })), [/^plugins\[0\]\.module: .*not-a-plugin\.js does not export a plugin: `create` must be a function$/]);
  t.match(problemsOf(() => parse({ plugins: [{ module: broken }] })), [/^plugins\[0\]\.module: cannot load .*broken\.js: /]);
  t.same(
    problemsOf(() =>
      parse({
        plugins: [
          { module: EXAMPLE, options: { header: 'X-A', value: 'a' } },
          { module: EXAMPLE, options: { header: 'X-B', value: 'b' } },
        ],
        routes: [{ name: 'r', match: { prefix: '/r' }, upstream: 'up', plugins: ['add-header', 'nope'] }],
      }),
    ),
    ['plugins[1].name: duplicate plugin name "add-header" (also plugins[0]); name one of them', 'routes[0].plugins[1]: unknown plugin "nope" (plugins lists "add-header")'],
  );
  t.same(problemsOf(() => parse({ plugins: [{ module: PROBE, options: { log: '/dev/null' } }], routes: [] })), [], 'a plugin no route names is fine');
});

t.test('a user step runs on the routes that name it, through a real gateway and upstream', async (t) => {
  const upstream = await startUpstream();
  t.teardown(() => upstream.close());
  const gw = await startGateway(
    config(
      {
        plugins: [
          { name: 'tenant', module: EXAMPLE, options: { header: 'X-Tenant', value: 'acme', to: 'upstream' } },
          { name: 'served-by', module: EXAMPLE, options: { header: 'X-Served-By', value: 'gw-1' } },
        ],
        routes: [
          { name: 'with', match: { prefix: '/with' }, upstream: 'up', plugins: ['tenant', 'served-by'] },
          { name: 'bare', match: { prefix: '/bare' }, upstream: 'up' },
        ],
      },
      upstream.url,
    ),
  );
  t.teardown(() => gw.close());

  const a = await call(gw.url, '/with/x');
  t.equal(a.status, 200);
  t.equal(a.headers['x-served-by'], 'gw-1', 'response header added');
  t.equal(upstream.seen[0].headers['x-tenant'], 'acme', 'upstream request header added');
  t.equal(upstream.seen[0].headers['x-served-by'], undefined);

  const b = await call(gw.url, '/bare/x');
  t.equal(b.status, 200);
  t.equal(b.headers['x-served-by'], undefined, 'a route that does not name the plugin does not run it');
  t.equal(upstream.seen[1].headers['x-tenant'], undefined);
});

t.test('phases: access steps run before authentication, request steps after it', async (t) => {
  const upstream = await startUpstream();
  t.teardown(() => upstream.close());
  const log = join(dir, 'phases.log');
  const gw = await startGateway(
    config(
      {
        plugins: [
          { name: 'early', module: PROBE, phase: 'access', options: { log } },
          { name: 'late', module: PROBE, options: { log } },
        ],
        consumers: [{ id: 'alice', apiKeys: [] }],
        auth: { jwt: { algorithms: ['HS256'], secret: 's'.repeat(32), requiredClaims: [] } },
        routes: [{ name: 'secure', match: { prefix: '/s' }, upstream: 'up', auth: { methods: ['jwt'] }, plugins: ['late', 'early'] }],
      },
      upstream.url,
    ),
  );
  t.teardown(() => gw.close());
  const refused = await call(gw.url, '/s/x');
  t.equal(refused.status, 401);
  t.equal(refused.headers['x-probe-early'], 'secure anonymous one', 'the access step ran before auth refused the request');
  t.equal(refused.headers['x-probe-late'], undefined, 'the request step never ran');

  const { createHmac } = await import('node:crypto');
  const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const unsigned = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub: 'alice' })}`;
  const token = `${unsigned}.${createHmac('sha256', 's'.repeat(32)).update(unsigned).digest('base64url')}`;
  const ok = await call(gw.url, '/s/x', { headers: { authorization: `Bearer ${token}` } });
  t.equal(ok.status, 200);
  t.equal(ok.headers['x-probe-early'], 'secure anonymous one');
  t.equal(ok.headers['x-probe-late'], 'secure alice one', 'the request step sees the verified consumer');
});

t.test('resources: initialised before serving, closed after a reload replaced them and with the gateway', async (t) => {
  const upstream = await startUpstream();
  t.teardown(() => upstream.close());
  const log = join(dir, 'resources.log');
  writeFileSync(log, '');
  const events = () => readFileSync(log, 'utf8').trim().split('\n').filter(Boolean);
  const cfg = (tag: string) =>
    config(
      {
        plugins: [{ module: PROBE, options: { log, tag } }],
        routes: [{ name: 'r', match: { prefix: '/r' }, upstream: 'up', plugins: ['probe'] }],
      },
      upstream.url,
    );
  const gw = await startGateway(cfg('one'));
  let closed = false;
  t.teardown(() => (closed ? undefined : gw.close()));
  t.same(events(), ['one init'], 'init ran before the listener opened');
  t.equal((await call(gw.url, '/r')).headers['x-probe-probe'], 'r anonymous one');

  await gw.gateway.reload(parseConfig(withTestDefaults(cfg('two')), { env: {} }));
  t.equal((await call(gw.url, '/r')).headers['x-probe-probe'], 'r anonymous two', 'the reloaded options serve');
  // The replaced runtime's resource closes once the new one serves (without waiting for it).
  for (let i = 0; i < 50 && events().length < 3; i++) await new Promise((r) => setTimeout(r, 10));
  t.same(events(), ['one init', 'two init', 'one close']);

  await gw.close();
  closed = true;
  t.same(events(), ['one init', 'two init', 'one close', 'two close'], 'the gateway closed the current one');
});

t.test('a plugin no route names is not built', async (t) => {
  const upstream = await startUpstream();
  t.teardown(() => upstream.close());
  const log = join(dir, 'unused.log');
  writeFileSync(log, '');
  const gw = await startGateway(config({ plugins: [{ module: PROBE, options: { log } }], routes: [{ name: 'r', match: { prefix: '/r' }, upstream: 'up' }] }, upstream.url));
  await gw.close();
  t.equal(readFileSync(log, 'utf8'), '', 'no resource opened, none closed');
});

t.test('a step that throws gets a 500 problem, and a plugin without a schema takes no options', async (t) => {
  const thrower = pluginFile(
    'thrower.js',
    "module.exports = { name: 'thrower', create: () => ({ stepFor: () => ({ name: 'thrower', run() { throw new Error('plugin bug'); } }) }) };\n",
  );
  t.same(problemsOf(() => parse({ plugins: [{ module: thrower, options: { a: 1 } }] })), ['plugins[0].options: plugin "thrower" takes no options']);
  const upstream = await startUpstream();
  t.teardown(() => upstream.close());
  const gw = await startGateway(config({ plugins: [{ module: thrower }], routes: [{ name: 'r', match: { prefix: '/r' }, upstream: 'up', plugins: ['thrower'] }] }, upstream.url));
  t.teardown(() => gw.close());
  const res = await call(gw.url, '/r');
  t.equal(res.status, 500);
  t.equal(res.headers['content-type'], 'application/problem+json');
  t.equal(res.json().code, 'INTERNAL');
  t.equal(upstream.seen.length, 0, 'the request never reached the upstream');
});
