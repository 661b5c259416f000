import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';

const root = join(__dirname, '..');
const cli = (...args: string[]) =>
  spawnSync(process.execPath, ['--import', 'tsx', join(root, 'src', 'main.ts'), ...args], { encoding: 'utf8', env: { ...process.env, PORT: '' } });

t.test('gateway --version prints the version of package.json', async (t) => {
  const r = cli('--version');
  t.equal(r.status, 0, r.stderr);
  t.equal(r.stdout, `${(JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version}\n`);
});

t.test('a usage error exits 2 and names what was wrong', async (t) => {
  for (const [args, message] of [
    [['--foo'], 'gateway: unknown option --foo'],
    [['--config', 'examples/gateway.yaml', '--verbose'], 'gateway: unknown option --verbose'],
    [['validate'], 'gateway: validate needs a file'],
    [['strat'], 'gateway: unknown command strat'],
    [['keys', 'list', 'alice', '--config', 'examples/gateway.yaml', '--all'], 'gateway: unknown option --all'],
  ] as const) {
    const r = cli(...args);
    t.equal(r.status, 2, args.join(' '));
    t.equal(r.stderr.split('\n')[0], message, args.join(' '));
    t.match(r.stderr, /^usage:$/m, 'the usage follows');
  }
});

t.test('gateway validate lists every problem in words and exits 1', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'gw-cli-'));
  const f = join(dir, 'gateway.yaml');
  writeFileSync(
    f,
    [
      'upstreams:',
      '  users: { targets: [http://127.0.0.1:3001] }',
      'routes:',
      '  - name: users',
      '    match: { prefix: /api/users }',
      '    upstream: user',
      '    rateLimit:',
      '      limits: [{ rate: 100, per: 1min, by: user }]',
      '    preserveHots: true',
      '',
    ].join('\n'),
  );
  const r = cli('validate', f);
  t.equal(r.status, 1);
  t.equal(r.stdout, '');
  t.equal(
    r.stderr,
    [
      `${f}: configuration is invalid:`,
      '  routes[0].preserveHots: unknown key (did you mean preserveHost?)',
      '  routes[0].rateLimit.limits[0].per: expected a duration like 500ms, 1s, 5m, 1h, 1d, 1w, 1mo (got "1min")',
      '  routes[0].rateLimit.limits[0].by: expected ip, consumer, apiKey, route or header:<name> (got "user")',
      '  routes[0].upstream: unknown upstream "user"',
      '',
    ].join('\n'),
  );
  writeFileSync(f, 'listen:\n  port: 8080\n\thost: 0.0.0.0\n');
  const tab = cli('validate', f);
  t.equal(tab.status, 1);
  t.equal(tab.stderr, `${f}: configuration is invalid:\n  line 3, column 1: tabs are not allowed in YAML indentation; use spaces\n  3 |  host: 0.0.0.0\n    | ^\n`);
});

t.test('gateway schema prints the JSON Schema committed in schema/', async (t) => {
  const r = cli('schema');
  t.equal(r.status, 0, r.stderr);
  t.equal(r.stdout, readFileSync(join(root, 'schema', 'gateway.schema.json'), 'utf8'));
  const schema = JSON.parse(r.stdout) as { $schema: string; title: string };
  t.equal(schema.$schema, 'http://json-schema.org/draft-07/schema#');
  t.equal(schema.title, 'API gateway configuration');
});
