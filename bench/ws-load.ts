import { WebSocket } from 'ws';

/**
 * WebSocket echo load, run as its own process like autocannon: `connections` sockets each send a
 * message and send the next as soon as its echo is back, for `durationS` seconds once all are open.
 * Prints {messages, errors, mps} as JSON: echoed messages, failed sockets, echoes per second.
 *
 *   node dist/bench/ws-load.js URL CONNECTIONS DURATION_S [MESSAGE_BYTES]
 */
const [url, connArg, durArg, sizeArg] = process.argv.slice(2);
const connections = Number(connArg);
const durationS = Number(durArg);
const payload = 'x'.repeat(Number(sizeArg ?? 128));

async function main(): Promise<void> {
  let errors = 0;
  let messages = 0;
  let running = false;
  const sockets = await Promise.all(
    Array.from(
      { length: connections },
      () =>
        new Promise<WebSocket>((resolve, reject) => {
          const ws = new WebSocket(url, { perMessageDeflate: false });
          ws.once('open', () => resolve(ws));
          ws.once('error', reject);
        }),
    ),
  );
  for (const ws of sockets) {
    ws.on('error', () => errors++);
    ws.on('message', () => {
      if (!running) return;
      messages++;
      ws.send(payload);
    });
  }
  running = true;
  const started = performance.now();
  for (const ws of sockets) ws.send(payload);
  await new Promise((r) => setTimeout(r, durationS * 1000));
  running = false;
  const counted = messages;
  const seconds = (performance.now() - started) / 1000;
  for (const ws of sockets) ws.terminate();
  process.stdout.write(JSON.stringify({ messages: counted, errors, mps: counted / seconds }));
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).message}\n`);
  process.exit(1);
});
