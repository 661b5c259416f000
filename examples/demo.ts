import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { NODE_FLAGS } from '../src/lifecycle/node-flags';
import { startServices } from './services';

/** `npm run demo`: the two example services plus the gateway CLI on examples/gateway.yaml. */
async function main(): Promise<void> {
  const servers = await startServices();
  const root = join(__dirname, '..', '..');
  const gateway = spawn(process.execPath, [...NODE_FLAGS, join(root, 'dist/src/main.js'), '--config', join(root, 'examples/gateway.yaml')], {
    stdio: 'inherit',
  });
  process.stdout.write(
    'demo: users on :3001, orders on :3002, gateway on :8080 (admin :9901)\n' +
      'try:  curl -i localhost:8080/api/users/123\n      curl -i localhost:8080/api/orders\n      curl localhost:9901/metrics\n',
  );
  const stop = (): void => {
    gateway.kill('SIGTERM');
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  gateway.on('exit', (code) => {
    for (const s of servers) s.close();
    process.exit(code ?? 0);
  });
}

void main();
