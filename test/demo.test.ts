import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { parseCurl, runCurl } from './helpers/curl';
import { freePort } from './helpers/redis';
import { walkthrough } from '../examples/walkthrough';

/**
 * `npm run demo` as a newcomer meets it: the demo process on free ports, its printed walkthrough read
 * back from stdout (the variables it sets, every command in order), each command run and checked.
 */
/** The demo process, once it has printed its walkthrough: its environment and what it wrote by then. */
interface RunningDemo {
  env: NodeJS.ProcessEnv;
  out: string;
}

/**
 * Starts the demo on free ports and waits for its walkthrough. A port found free can be taken by a
 * parallel test before the demo binds it: a start that fails with EADDRINUSE is tried again on
 * other ports (three times at most); any other failure is the test's.
 */
async function startDemo(t: { teardown(fn: () => Promise<void>): void; fail(msg: string): void }): Promise<RunningDemo | null> {
  const names = ['DEMO_PORT', 'DEMO_ADMIN_PORT', 'DEMO_CONTROL_PORT', 'DEMO_USERS_PORT', 'DEMO_ORDERS_PORT', 'DEMO_CATALOG_PORT', 'DEMO_INVENTORY_A_PORT', 'DEMO_INVENTORY_B_PORT'];
  for (let attempt = 1; ; attempt++) {
    const env: NodeJS.ProcessEnv = { ...process.env };
    for (const n of names) env[n] = String(await freePort());
    const child = spawn(process.execPath, ['--import', 'tsx', join(__dirname, '..', 'examples', 'demo.ts')], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    t.teardown(async () => {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    });
    const deadline = Date.now() + 60_000;
    while (!out.includes('Stop with Ctrl-C')) {
      if (child.exitCode !== null && out.includes('EADDRINUSE') && attempt < 3) break;
      if (Date.now() > deadline || child.exitCode !== null) {
        t.fail(`demo did not print its walkthrough:\n${out}`);
        return null;
      }
      await sleep(50);
    }
    if (out.includes('Stop with Ctrl-C')) return { env, out };
  }
}

t.test('the demo walkthrough: every printed command does what it says', async (t) => {
  const demo = await startDemo(t);
  if (demo === null) return;
  const { env, out } = demo;
  const vars: Record<string, string> = {};
  for (const m of out.matchAll(/^ {2}(TOKEN|KEY|ADMIN)=(\S+)$/gm)) vars[m[1]] = m[2];
  t.same(Object.keys(vars).sort(), ['ADMIN', 'KEY', 'TOKEN'], 'the walkthrough sets its credentials first');

  const ports = { gateway: Number(env.DEMO_PORT), admin: Number(env.DEMO_ADMIN_PORT), control: Number(env.DEMO_CONTROL_PORT) };
  const printed = out.split('\n').map((l) => l.trim());
  for (const section of walkthrough(ports)) {
    for (const step of section.steps) {
      t.ok(printed.includes(step.command), `printed: ${step.command}`);
      const result = await runCurl(parseCurl(step.command, vars));
      const what = `${section.heading} / ${step.title}`;
      if (step.expect.statuses) t.same(result.statuses, step.expect.statuses, `${what}: statuses`);
      t.equal(result.status, step.expect.status, `${what}: status`);
      for (const [name, start] of Object.entries(step.expect.headers ?? {})) {
        const v = result.headers[name];
        t.ok(typeof v === 'string' && v.startsWith(start), `${what}: ${name} starts with "${start}" (got ${String(v)})`);
      }
      if (step.expect.body) t.match(result.body, step.expect.body, `${what}: body`);
    }
  }
  // The inventory target that came back is routable again once the health checks saw it.
  const upstreams = await runCurl(parseCurl(`curl -s -H "Authorization: Bearer $ADMIN" localhost:${ports.admin}/admin/upstreams`, vars));
  t.equal(upstreams.status, 200);
});

t.test('demo flags: a bad one is a usage error that names it', async (t) => {
  const child = spawn(process.execPath, ['--import', 'tsx', join(__dirname, '..', 'examples', 'demo.ts'), '--port', 'eighty'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  t.equal(code, 2);
  t.match(err, '--port expects a port number (got "eighty")');
});
