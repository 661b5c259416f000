import Fastify from 'fastify';

/**
 * The ceiling of any cache hit: Fastify alone (logger off) answering the bench upstream's response
 * from memory, with the headers a gateway hit sends (the stored ones, Age, X-Cache, a request id).
 * It does none of a hit's work (routing by prefix, a key, a store lookup, freshness, metrics, the
 * access line), so a gateway hit can approach it but not pass it.
 */
const port = Number(process.argv[2]);
const body = Buffer.from(JSON.stringify({ id: 123, name: 'bench user', roles: ['reader'], active: true }));

async function main(): Promise<void> {
  const app = Fastify({ logger: false });
  let id = 0;
  app.get('/api/users/*', (_req, reply) => {
    void reply
      .headers({
        'content-type': 'application/json',
        'cache-control': 'public, max-age=60',
        age: '0',
        'x-cache': 'HIT',
        'x-request-id': String(++id),
      })
      .send(body);
  });
  await app.listen({ port, host: '127.0.0.1' });
  process.stdout.write(`listening ${port}\n`);
  process.on('SIGTERM', () => void app.close().then(() => process.exit(0)));
}

void main();
