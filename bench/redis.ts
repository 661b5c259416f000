import { spawn } from 'node:child_process';
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort, type Proc } from './harness';

function pong(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.setTimeout(500, () => s.destroy());
    s.on('error', () => resolve(false));
    s.on('close', () => resolve(false));
    s.on('connect', () => s.write('PING\r\n'));
    s.on('data', (d) => {
      resolve(d.toString().startsWith('+PONG'));
      s.destroy();
    });
  });
}

/** A private redis-server on a free port for one bench run (no persistence), never the shared one. */
export async function startRedisServer(name: string): Promise<{ url: string; proc: Proc }> {
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  for (let i = 0; !(await pong(port)); i++) {
    if (child.exitCode !== null || i > 400) throw new Error(`${name}: redis-server did not start`);
    await sleep(25);
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    proc: {
      name,
      child,
      stop: async () => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGKILL');
        await exited;
      },
    },
  };
}
