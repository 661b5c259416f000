import Fastify from 'fastify';
import proxy from '@fastify/http-proxy';

/**
 * The reference: @fastify/http-proxy alone, with the same undici pool settings as the gateway's
 * defaults and logging off.
 */
const port = Number(process.argv[2]);
const upstream = process.argv[3];

async function main(): Promise<void> {
  const app = Fastify({ logger: false });
  await app.register(proxy, {
    upstream,
    prefix: '/api/users',
    undici: { connections: 128, pipelining: 1, keepAliveTimeout: 4000, headersTimeout: 30000, bodyTimeout: 30000 },
  });
  await app.listen({ port, host: '127.0.0.1' });
  process.stdout.write(`listening ${port}\n`);
  process.on('SIGTERM', () => void app.close().then(() => process.exit(0)));
}

void main();
