import { spawn } from 'node:child_process';
import { createServer, request, type Server } from 'node:http';
import { join } from 'node:path';
import { createSigner } from 'fast-jwt';
import { NODE_FLAGS } from '../src/lifecycle/node-flags';
import { ExampleServices, servicePorts } from './services';
import { DEMO_API_KEY, walkthrough } from './walkthrough';

const USAGE = `usage: npm run demo -- [--port N] [--admin-port N] [--redis URL]

  --port N        the gateway's port (default 8080, or DEMO_PORT)
  --admin-port N  the admin listener's port (default 9901, or DEMO_ADMIN_PORT)
  --redis URL     keep rate limits and the cache in this Redis (default: in memory)

The example services listen on 3001-3005 (DEMO_USERS_PORT, DEMO_ORDERS_PORT, DEMO_CATALOG_PORT,
DEMO_INVENTORY_A_PORT, DEMO_INVENTORY_B_PORT) and the demo's control on 3000 (DEMO_CONTROL_PORT).`;

const DEFAULT_JWT_SECRET = 'demo-only-secret-change-me-0123456789';
const DEFAULT_ADMIN_TOKEN = 'demo-admin-token';

function fail(message: string): never {
  process.stderr.write(`demo: ${message}\n${USAGE}\n`);
  process.exit(2);
}

/** Command-line flags become the DEMO_* variables examples/gateway.yaml reads. */
function parseArgs(args: string[], env: NodeJS.ProcessEnv): void {
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === '--help' || arg === '-h') {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    }
    const value = args[i + 1];
    if (arg !== '--port' && arg !== '--admin-port' && arg !== '--redis') fail(`unknown option ${arg}`);
    if (value === undefined || value.startsWith('--')) fail(`${arg} needs a value`);
    i++;
    if (arg === '--redis') {
      if (!/^rediss?:\/\//.test(value)) fail(`--redis expects a URL like redis://127.0.0.1:6379 (got "${value}")`);
      env.DEMO_STORE = 'redis';
      env.DEMO_REDIS_URL = value;
    } else {
      const port = Number(value);
      if (!Number.isInteger(port) || port < 1 || port > 65535) fail(`${arg} expects a port number (got "${value}")`);
      env[arg === '--port' ? 'DEMO_PORT' : 'DEMO_ADMIN_PORT'] = String(port);
    }
  }
}

function portOf(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const v = env[name];
  return v ? Number(v) : fallback;
}

/** The demo's own control: stops and restarts an example service, as a crashed pod would. */
function controlServer(services: ExampleServices): Server {
  return createServer((req, res) => {
    const m = /^\/(stop|start)\/([\w-]+)$/.exec(req.url ?? '');
    if (req.method !== 'POST' || !m || !services.names().includes(m[2])) {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end(`try POST /stop/<name> or /start/<name>, name one of: ${services.names().join(', ')}\n`);
      return;
    }
    const [, verb, name] = m;
    const done = verb === 'stop' ? services.stop(name) : services.resume(name);
    done.then(
      () => {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end(`${verb === 'stop' ? 'stopped' : 'started'} ${name}\n`);
      },
      (err: Error) => {
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.end(`${err.message}\n`);
      },
    );
  });
}

function ready(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path: '/readyz', timeout: 500 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}

async function main(): Promise<void> {
  const env = { ...process.env };
  parseArgs(process.argv.slice(2), env);
  const ports = { gateway: portOf(env, 'DEMO_PORT', 8080), admin: portOf(env, 'DEMO_ADMIN_PORT', 9901), control: portOf(env, 'DEMO_CONTROL_PORT', 3000) };
  const services = await ExampleServices.start(servicePorts(env));
  const control = controlServer(services);
  await new Promise<void>((resolve, reject) => {
    control.once('error', reject);
    control.listen(ports.control, '127.0.0.1', resolve);
  });
  // Built, this file is dist/examples/demo.js; run from its source (tests use tsx) it is examples/demo.ts.
  const fromSource = __filename.endsWith('.ts');
  const root = fromSource ? join(__dirname, '..') : join(__dirname, '..', '..');
  const main = fromSource ? ['--import', 'tsx', join(root, 'src/main.ts')] : [join(root, 'dist/src/main.js')];
  const gateway = spawn(process.execPath, [...NODE_FLAGS, ...main, '--config', join(root, 'examples/gateway.yaml')], {
    stdio: ['ignore', 'inherit', 'inherit'],
    env,
  });
  let stopping = false;
  const stop = (): void => {
    stopping = true;
    gateway.kill('SIGTERM');
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  gateway.on('exit', (code) => {
    control.close();
    void services.close().then(() => process.exit(stopping ? 0 : (code ?? 1)));
  });

  const deadline = Date.now() + 15_000;
  while (!(await ready(ports.admin))) {
    if (gateway.exitCode !== null || Date.now() > deadline) return stop();
    await new Promise((r) => setTimeout(r, 100));
  }
  const sign = createSigner({ algorithm: 'HS256', key: env.DEMO_JWT_SECRET ?? DEFAULT_JWT_SECRET, expiresIn: 24 * 3600 * 1000 });
  const token = sign({ sub: 'alice', roles: ['customer'] });
  const out: string[] = [
    '',
    `demo: gateway on :${ports.gateway} (admin :${ports.admin}), ${env.DEMO_STORE === 'redis' ? `store in ${env.DEMO_REDIS_URL}` : 'store in memory'}`,
    `      services ${services.names().join(', ')}; demo control on :${ports.control}`,
    '',
    'Set these in your shell first (demo credentials, printed because they are public):',
    '',
    `  TOKEN=${token}`,
    `  KEY=${DEMO_API_KEY}`,
    `  ADMIN=${env.DEMO_ADMIN_TOKEN ?? DEFAULT_ADMIN_TOKEN}`,
  ];
  for (const section of walkthrough(ports)) {
    out.push('', `## ${section.heading}`);
    for (const step of section.steps) out.push('', `  # ${step.title}`, `  ${step.command}`, `  #   → ${step.shows}`);
  }
  out.push('', 'Stop with Ctrl-C. The configuration is examples/gateway.yaml; README.md and docs/ explain each part.', '');
  process.stdout.write(`${out.join('\n')}\n`);
}

void main();
