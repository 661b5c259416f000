import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import YAML from 'yaml';
import { importCommand, ImportCommandError } from '../src/import';
import { convertKong } from '../src/import/kong/convert';
import { keysCommand } from '../src/plugins/auth/keys-cli';
import { loadConfigFile } from '../src/config/load';
import { bytes, mint, now } from './helpers/auth';
import { startGateway, type TestConfig } from './helpers/gateway';
import { call } from './helpers/http';
import { startUpstream } from './helpers/upstream';

const root = join(__dirname, '..');
const EXAMPLE = join(root, 'docs', 'examples', 'kong.yml');
const cli = (...args: string[]) =>
  spawnSync(process.execPath, ['--import', 'tsx', join(root, 'src', 'main.ts'), ...args], { cwd: root, encoding: 'utf8', env: { ...process.env, PORT: '' }, timeout: 60000 });
/** The command in process (each spawned CLI costs seconds on a loaded machine): its stdout and stderr. */
function run(...args: string[]): { stdout: string; stderr: string } {
  let stdout = '';
  let stderr = '';
  importCommand(args, { out: (s) => (stdout += s), err: (s) => (stderr += s) });
  return { stdout, stderr };
}
const convert = (doc: unknown) => convertKong(YAML.parse(YAML.stringify(doc)));
const paths = (doc: unknown) => convert(doc).issues.map((i) => `${i.path}: ${i.message}`);

t.test('gateway import kong converts the example of the docs, lists what it left out, and the result validates', async (t) => {
  const r = run('kong', 'docs/examples/kong.yml');
  t.equal(
    r.stderr,
    [
      'docs/examples/kong.yml: 4 items not converted or converted approximately:',
      '  consumers[0].custom_id: not carried over: the consumer id is the username (sent upstream as X-Consumer-Id)',
      '  plugins[1] (name: prometheus): not needed: metrics are built in (/metrics on the admin listener)',
      '  services[0].routes[1].plugins[2] (name: oauth2): no equivalent',
      '  services[0].routes[1].plugins[3] (name: acl): a JWT may also carry roles in its roles claim (auth.jwt.claims.roles), which Kong ignores',
      '',
    ].join('\n'),
  );
  const dir = mkdtempSync(join(tmpdir(), 'gw-kong-'));
  const out = join(dir, 'gateway.yaml');
  const written = cli('import', 'kong', 'docs/examples/kong.yml', '--out', out);
  t.equal(written.status, 0, written.stderr);
  t.equal(written.stdout, '', 'with --out nothing goes to stdout');
  t.equal(written.stderr, r.stderr, 'the list goes to stderr');
  t.equal(readFileSync(out, 'utf8'), r.stdout, 'the file holds what stdout would');
  const v = cli('validate', out);
  t.equal(v.status, 0, v.stderr);
  t.match(v.stdout, /valid \(5 routes, 2 upstreams\)/);

  t.match(r.stdout, /^#   services\[0\]\.routes\[1\]\.plugins\[2\] \(name: oauth2\): no equivalent$/m, 'the list heads the file as comments');
  const cfg = YAML.parse(r.stdout);
  t.notMatch(r.stdout, /alice-0d7a2c4e9f1b|bob-legacy-key-5511/, 'the keys themselves are not in the output');
  const hash = (k: string) => createHash('sha256').update(k).digest('hex');
  t.same(cfg.consumers.map((c: any) => [c.id, c.apiKeys[0].sha256]), [['alice', hash('alice-0d7a2c4e9f1b')], ['bob', hash('bob-legacy-key-5511')]]);
  for (const c of cfg.consumers) t.match(c.apiKeys[0].prefix, /^ik_[a-z2-7]{8}$/);
  t.same(cfg.upstreams.orders.targets, [{ url: 'http://orders-a.internal:3002/orders', weight: 100 }, { url: 'http://orders-b.internal:3002/orders', weight: 50 }]);
  t.same(cfg.routes.map((x: any) => x.name), ['users-api', 'users-admin', 'orders-api-0', 'orders-api-1', 'catalog']);

  // An imported key is managed like ours: listed and revoked by its ik_ prefix.
  let listed = '';
  await keysCommand(['list', 'bob', '--config', out], (s) => (listed += s));
  const bobPrefix = cfg.consumers[1].apiKeys[0].prefix;
  t.match(listed, new RegExp(`^${bobPrefix} `, 'm'));
  await keysCommand(['revoke', bobPrefix, '--config', out], () => undefined);
  t.same(loadConfigFile(out, {}).consumers[1].apiKeys, [], 'revoked from the file');
});

t.test('usage errors exit 2, an unreadable file exits 1', async (t) => {
  const r = cli('import', 'kong', 'docs/examples/kong.yml', '--force');
  t.equal(r.status, 2);
  t.equal(r.stderr.split('\n')[0], 'gateway: unknown option --force');
  t.match(r.stderr, /^  gateway import kong <kong\.yml> \[--out <file>\]$/m, 'the usage names the command');
  for (const [args, message] of [
    [['import'], 'import needs a kind (kong) and a file'],
    [['apisix', 'x.yml'], 'cannot import from "apisix" (kong only)'],
    [['kong'], 'import kong needs a file'],
    [['kong', 'docs/examples/kong.yml', '--out'], 'option --out needs a file'],
    [['kong', 'a.yml', 'b.yml'], 'unexpected argument b.yml'],
  ] as const) {
    const err = t.throws(() => run(...(args[0] === 'import' ? [] : args))) as ImportCommandError;
    t.equal(err.message, message);
    t.equal(err.usage, true, 'a usage error (exit 2)');
  }
  const missing = t.throws(() => run('kong', 'no-such-kong.yml')) as ImportCommandError;
  t.match(missing.message, /^no-such-kong\.yml: ENOENT/);
  t.equal(missing.usage, false, 'exit 1');
});

t.test('a gateway started on the converted example routes, rate-limits, and accepts the imported keys and tokens', async (t) => {
  const users = await startUpstream();
  const ordersA = await startUpstream();
  const ordersB = await startUpstream();
  t.teardown(() => Promise.all([users.close(), ordersA.close(), ordersB.close()]));
  const r = run('kong', EXAMPLE);
  const cfg = YAML.parse(r.stdout) as Record<string, any>;
  // The Kong hosts are names of a cluster; here they are the real upstreams on loopback, base paths kept.
  cfg.upstreams.users.targets = [`${users.url}/v1`];
  cfg.upstreams.orders.targets = [{ url: `${ordersA.url}/orders`, weight: 100 }, { url: `${ordersB.url}/orders`, weight: 50 }];
  cfg.upstreams.orders.healthCheck.enabled = false;
  delete cfg.listen;
  const gw = await startGateway(cfg as TestConfig);
  t.teardown(() => gw.close());

  t.equal((await call(gw.url, '/api/users/7')).status, 401, 'key-auth: no key, no entry');
  t.equal((await call(gw.url, '/api/users/7', { headers: { apikey: 'not-a-key-of-anyone' } })).status, 401, 'an unknown key of the foreign shape');
  const alice = await call(gw.url, '/api/users/7', { headers: { apikey: 'alice-0d7a2c4e9f1b' } });
  t.equal(alice.status, 200, alice.body);
  const seen = users.seen[users.seen.length - 1];
  t.equal(seen.url, '/v1/7', 'strip_path and the service path, as Kong forwards');
  t.equal(seen.headers['x-consumer-id'], 'alice');
  t.notOk('apikey' in seen.headers, 'hide_credentials: the key stays at the gateway');
  const bob = await call(gw.url, '/api/users/8', { headers: { apikey: 'bob-legacy-key-5511' } });
  t.equal(bob.status, 200);
  t.equal(users.seen[users.seen.length - 1].headers['x-consumer-id'], 'bob');
  t.equal((await call(gw.url, '/api/users/7?apikey=alice-0d7a2c4e9f1b')).status, 401, 'key_in_query: false is kept');

  // second: 5 by ip on the users service: a burst of 20 at once goes past it. The bound on what gets
  // through counts the refill over the time the burst really took (a loaded machine spreads it out).
  const started = Date.now();
  const burst = await Promise.all(Array.from({ length: 20 }, () => call(gw.url, '/api/users/9', { headers: { apikey: 'alice-0d7a2c4e9f1b' } })));
  const elapsed = (Date.now() - started) / 1000;
  const limited = burst.filter((x) => x.status === 429);
  const passed = burst.filter((x) => x.status === 200).length;
  t.equal(limited.length + passed, burst.length, 'every answer is 200 or 429');
  t.ok(limited.length >= 1, `some of the burst is limited (${burst.map((x) => x.status).join(' ')})`);
  t.ok(passed <= 5 + Math.ceil(5 * elapsed), `${passed} passed in ${elapsed} s: no more than 5 and the refill`);
  t.ok(limited[0].headers['retry-after'], 'Retry-After on the 429');
  t.match(String(limited[0].headers['ratelimit-policy']), /5;w=1/);

  const token = await mint({ iss: 'alice', sub: 'u-1', exp: now() + 300 }, bytes('kong-imported-hmac-secret-0123456789abcdef'));
  const admin = (headers: Record<string, string>) => call(gw.url, '/admin/users/1', { headers: { host: 'admin.example.com', ...headers } });
  t.equal((await admin({})).status, 401, 'jwt: no token, no entry');
  const withToken = await admin({ authorization: `Bearer ${token}` });
  t.equal(withToken.status, 200, withToken.body);
  t.equal(users.seen[users.seen.length - 1].headers['x-consumer-id'], 'alice', 'the key claim (iss) names the consumer, as in Kong');
  t.equal(users.seen[users.seen.length - 1].headers.host, 'admin.example.com', 'preserve_host');
  const bobToken = await mint({ iss: 'bob', exp: now() + 300 }, bytes('kong-imported-hmac-secret-0123456789abcdef'));
  t.equal((await admin({ authorization: `Bearer ${bobToken}` })).status, 403, 'acl: bob is not in the admins group');
  const forged = await mint({ iss: 'alice', exp: now() + 300 }, bytes('another-secret-of-at-least-thirty-two-bytes'));
  t.equal((await admin({ authorization: `Bearer ${forged}` })).status, 401);

  const carts = await call(gw.url, '/api/carts/3', { headers: { 'x-debug': '1', 'x-client': 'web' } });
  t.equal(carts.status, 200);
  const order = [...ordersA.seen, ...ordersB.seen].pop()!;
  t.equal(order.url, '/orders/3');
  t.notOk('x-debug' in order.headers, 'request-transformer remove');
  t.equal(order.headers['x-client-name'], 'web', 'request-transformer rename');
  t.equal(order.headers['x-gateway'], 'kong-import', 'request-transformer append');

  const before = ordersA.seen.length + ordersB.seen.length;
  const first = await call(gw.url, '/api/catalog/shoes');
  const second = await call(gw.url, '/api/catalog/shoes');
  t.equal([first.status, second.status].join(), '200,200');
  t.equal(second.headers['x-cache'], 'HIT', 'proxy-cache: the second answer comes from the cache');
  t.equal(ordersA.seen.length + ordersB.seen.length - before, 1, 'one request reached the upstream');
  t.equal([...ordersA.seen, ...ordersB.seen].pop()!.url, '/orders/api/catalog/shoes', 'strip_path: false keeps the path');

  const preflight = await call(gw.url, '/api/users/1', { method: 'OPTIONS', headers: { origin: 'https://app.example.com', 'access-control-request-method': 'POST' } });
  t.equal(preflight.headers['access-control-allow-origin'], 'https://app.example.com', 'the global cors plugin');
  t.equal(preflight.headers['access-control-allow-credentials'], 'true');
});

t.test('a foreign-shaped key is refused unless auth.apiKeys.importedKeys is on', async (t) => {
  const { config } = convert({ _format_version: '3.0', services: [{ name: 's', url: 'http://127.0.0.1:1', routes: [{ paths: ['/a'], plugins: [{ name: 'key-auth' }] }] }], consumers: [{ username: 'c', keyauth_credentials: [{ key: 'k-1' }] }] });
  const cfg = config as Record<string, any>;
  t.equal(cfg.auth.apiKeys.importedKeys, true);
  t.equal(cfg.auth.apiKeys.query, 'apikey', 'Kong reads the key from the query string by default');
  t.same(cfg.routes[0].auth, { methods: ['apiKey'], forwardCredentials: true }, 'and forwards it unless hide_credentials');
  delete cfg.auth.apiKeys.importedKeys;
  await t.rejects(startGateway(cfg as TestConfig), /an imported key \(ik_\) is only accepted with auth\.apiKeys\.importedKeys: true/);
});

t.test('what has no equivalent is listed by path; the rest converts', async (t) => {
  t.same(
    paths({
      _format_version: '3.0',
      services: [
        { name: 'grpc', protocol: 'grpc', host: 'g', port: 9000 },
        {
          name: 'web',
          url: 'https://web.internal/base',
          routes: [
            { name: 'r', paths: ['~/items/\\d+$', '/items'], hosts: ['example.*'], headers: { 'x-v': ['1'] } },
            { name: 'same', paths: ['/items'] },
          ],
          plugins: [
            { name: 'rate-limiting', config: { month: 1000, limit_by: 'path', path: '/x' } },
            { name: 'basic-auth', enabled: false },
          ],
        },
      ],
      consumers: [{ username: 'x', basicauth_credentials: [{ username: 'u', password: 'p' }], plugins: [{ name: 'acl', config: { allow: ['a'] } }] }],
    }),
    [
      'services[0].protocol: protocol grpc: no equivalent (HTTP and HTTPS upstreams only); service left out',
      'services[1].routes[0].headers: no equivalent: routes match on path, method and host only',
      'services[1].routes[0].hosts[0]: "example.*": no equivalent (host names and *.suffix wildcards only); left out',
      'services[1].routes[0].paths[0]: regular expression ~/items/\\d+$: no equivalent (prefixes only); left out',
      'services[1].routes[1]: matches the same prefix, host and method as services[1].routes[0]: left out',
      'consumers[0].basicauth_credentials: no equivalent credential type: left out',
      'services[1].plugins[1] (name: basic-auth): disabled; left out',
      'services[1].plugins[0].config.limit_by: path: no equivalent (consumer, credential, ip, header or service); plugin left out',
      'consumers[0].plugins[0] (name: acl): no equivalent for a consumer',
    ],
  );
  const { config } = convert({
    _format_version: '3.0',
    services: [{ name: 'api', host: 'up', protocol: 'http', path: '/', routes: [{ name: 'r', paths: ['/v1/'], strip_path: false }] }],
    upstreams: [
      {
        name: 'up',
        algorithm: 'consistent-hashing',
        hash_on: 'header',
        hash_on_header: 'x-user',
        targets: [{ target: '10.0.0.1:8080', weight: 60000 }, { target: '10.0.0.2', weight: 6000 }],
      },
    ],
    plugins: [{ name: 'rate-limiting', config: { hour: 1000, limit_by: 'header', header_name: 'x-tenant', policy: 'redis', redis: { host: 'redis', port: 6380 }, fault_tolerant: false } }],
  });
  const cfg = config as Record<string, any>;
  t.same(cfg.upstreams.api, {
    targets: [{ url: 'http://10.0.0.1:8080', weight: 1000 }, { url: 'http://10.0.0.2:8000', weight: 100 }],
    balance: 'hash',
    hash: { key: 'header:x-user' },
  }, 'weights scaled to our range, Kong\'s default target port');
  t.same(cfg.routes[0], {
    name: 'r',
    match: { prefix: '/v1' },
    upstream: 'api',
    rateLimit: { limits: [{ rate: 1000, per: '1h', by: 'header:x-tenant' }], failMode: 'closed' },
  });
  t.same(cfg.store, { type: 'redis', redis: { url: 'redis://redis:6380/0' } }, 'policy: redis becomes the shared store');
});

t.test('top-level routes and plugins find their service, route and consumer by name; JWT keys must be one', async (t) => {
  const pem = '-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----';
  const r = convert({
    _format_version: '3.0',
    services: [{ name: 'svc', url: 'http://svc.internal:8080' }],
    routes: [{ name: 'top', service: { name: 'svc' }, paths: ['/top'], methods: ['get'] }, { name: 'orphan', service: 'nope', paths: ['/x'] }],
    consumers: [
      { username: 'ann', keyauth_credentials: [{ key: 'has a space' }], jwt_secrets: [{ key: 'ann', algorithm: 'ES256', rsa_public_key: pem }] },
      { username: 'ben', jwt_secrets: [{ key: 'ben-iss', algorithm: 'ES256', rsa_public_key: pem.replace('AE', 'AF') }] },
    ],
    plugins: [
      { name: 'jwt', route: 'top', config: { claims_to_verify: ['exp'] } },
      { name: 'rate-limiting', route: 'top', consumer: 'ann', config: { minute: 1 } },
      { name: 'cors', service: 'missing' },
    ],
  });
  t.same(r.issues.map((i) => `${i.path}: ${i.message}`), [
    'routes[1]: the route names no service this file defines: left out',
    'consumers[0].keyauth_credentials[0]: an imported key must be 1 to 256 visible ASCII characters: left out',
    'plugins[1] (name: rate-limiting): a plugin for one consumer on one route or service has no equivalent; left out',
    'plugins[2] (name: cors): names a route or service this file does not define; left out',
    "consumers[1].jwt_secrets[0]: one JWT key for the whole gateway: this credential's key differs from consumers[0].jwt_secrets[0]'s; left out",
  ]);
  const cfg = r.config as Record<string, any>;
  t.same(cfg.routes, [{ name: 'top', match: { prefix: '/top', methods: ['GET'] }, upstream: 'svc', rewrite: { stripPrefix: true }, auth: { methods: ['jwt'] } }]);
  t.same(cfg.auth.jwt, { requiredClaims: ['iss', 'exp'], claims: { consumer: 'iss', user: 'sub' }, query: 'jwt', algorithms: ['ES256'], publicKey: pem });
  t.notOk(cfg.auth.apiKeys, 'no key was importable, so no imported-keys switch');
});
