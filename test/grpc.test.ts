import t from 'tap';
import { makeKey } from './helpers/auth';
import { startGateway } from './helpers/gateway';
import { ECHO, echoClient, grpc, json, startGrpcUpstream, unary } from './helpers/grpc';
import { freePort } from './helpers/redis';

t.test('gRPC through the gateway (h2c in, h2c to a grpc-js upstream): unary, streaming, trailers, deadlines, gateway errors as gRPC statuses', async (t) => {
  const up = await startGrpcUpstream();
  const key = makeKey();
  const dead = await freePort();
  const gw = await startGateway({
    listen: { h2c: { port: 0 } },
    log: { accessFields: ['reqId', 'path', 'status', 'route', 'error', 'grpcStatus'] },
    upstreams: { echo: { targets: [up.url], protocol: 'grpc' }, gone: { targets: [`http://127.0.0.1:${dead}`], protocol: 'grpc', breaker: { enabled: false } } },
    auth: { apiKeys: { header: 'X-API-Key' } },
    consumers: [{ id: 'alice', apiKeys: [{ prefix: key.prefix, sha256: key.sha256 }] }],
    routes: [
      { name: 'keyed', match: { prefix: `/${ECHO}/ClientStream` }, upstream: 'echo', auth: { methods: ['apiKey'] } },
      { name: 'limited', match: { prefix: `/${ECHO}/ServerStream` }, upstream: 'echo', rateLimit: { limits: [{ rate: 1, per: '1m' }] } },
      { name: 'echo', match: { prefix: `/${ECHO}` }, upstream: 'echo' },
    ],
  });
  const h2cPort = (gw.gateway.servers[1].address() as { port: number }).port;
  const client = echoClient(`127.0.0.1:${h2cPort}`);
  t.teardown(async () => {
    client.close();
    await gw.close();
    await up.close();
  });

  const ok = await unary(client, `/${ECHO}/Unary`, { hello: 'world' });
  t.equal(ok.err, null, 'unary call relayed');
  t.same(ok.value?.echo, { hello: 'world' });
  t.same(ok.trailers?.get('x-trailer'), ['kept'], 'trailers are relayed');
  t.ok(ok.metadata?.get('x-request-id')[0], 'the gateway request id in the response metadata');
  t.equal(up.seen.at(-1)?.get('x-request-id')[0], ok.metadata?.get('x-request-id')[0], 'and in the upstream call');

  const failed = await unary(client, `/${ECHO}/Unary`, { fail: true });
  t.equal(failed.err?.code, grpc.status.NOT_FOUND, "the upstream's own status is relayed");
  t.equal(failed.err?.details, 'no such thing');
  t.same(failed.trailers?.get('x-why'), ['missing']);

  // The upstream's deadline is what is left of the client's.
  const timed = await unary(client, `/${ECHO}/Unary`, {}, new grpc.Metadata(), { deadline: Date.now() + 5000 });
  const relayedMs = timed.value?.deadlineMs as number;
  t.ok(relayedMs > 3000 && relayedMs <= 5000, `grpc-timeout relayed minus elapsed time (${relayedMs} ms)`);

  const late = await unary(client, `/${ECHO}/Slow`, { ms: 5000 }, new grpc.Metadata(), { deadline: Date.now() + 300 });
  t.equal(late.err?.code, grpc.status.DEADLINE_EXCEEDED, 'a call past its deadline is DEADLINE_EXCEEDED');

  const messages = await new Promise<unknown[]>((resolve, reject) => {
    const got: unknown[] = [];
    const call = client.makeServerStreamRequest(`/${ECHO}/ServerStream`, json.serialize, json.deserialize, { count: 5 }, new grpc.Metadata(), {});
    call.on('data', (m) => got.push(m));
    call.on('error', reject);
    call.on('status', (s: grpc.StatusObject) => (s.code === 0 ? resolve(got) : reject(new Error(s.details))));
  });
  t.same(messages, [0, 1, 2, 3, 4].map((i) => ({ i })), 'server streaming relays every message in order');

  const limited = await new Promise<grpc.StatusObject>((resolve) => {
    const call = client.makeServerStreamRequest(`/${ECHO}/ServerStream`, json.serialize, json.deserialize, { count: 1 }, new grpc.Metadata(), {});
    call.on('data', () => undefined);
    call.on('error', () => undefined);
    call.on('status', resolve);
  });
  t.equal(limited.code, grpc.status.RESOURCE_EXHAUSTED, 'over the rate limit: RESOURCE_EXHAUSTED');
  t.ok(limited.metadata.get('retry-after')[0], 'Retry-After travels as metadata');

  const clientStream = (metadata: grpc.Metadata): Promise<{ err: grpc.ServiceError | null; value: unknown }> =>
    new Promise((resolve) => {
      const call = client.makeClientStreamRequest(`/${ECHO}/ClientStream`, json.serialize, json.deserialize, metadata, {}, (err, value) => resolve({ err, value }));
      for (const n of [1, 2, 3]) call.write({ n });
      call.end();
    });
  const anonymous = await clientStream(new grpc.Metadata());
  t.equal(anonymous.err?.code, grpc.status.UNAUTHENTICATED, 'no credential: UNAUTHENTICATED');
  const withKey = new grpc.Metadata();
  withKey.set('x-api-key', key.key);
  const summed = await clientStream(withKey);
  t.same(summed.value, { sum: 6 }, 'client streaming with a valid key');

  const unknown = await unary(client, '/other.Service/Call', {});
  t.equal(unknown.err?.code, grpc.status.UNIMPLEMENTED, 'no route: UNIMPLEMENTED, as gRPC maps 404');

  gw.gateway.flushLogs();
  const lines = gw.logs.filter((l) => l.msg === 'request completed');
  t.ok(lines.length >= 9, 'every call has an access line');
  const statuses = new Set(lines.map((l) => l.grpcStatus));
  for (const code of ['0', '5', '8', '16', '12']) t.ok(statuses.has(code), `grpc-status ${code} is on an access line (the upstream's, or the gateway's own)`);
});

t.test('a gRPC route whose target is down answers UNAVAILABLE', async (t) => {
  const dead = await freePort();
  const gw = await startGateway({
    listen: { h2c: { port: 0 } },
    upstreams: { gone: { targets: [`http://127.0.0.1:${dead}`], protocol: 'grpc', breaker: { enabled: false } } },
    routes: [{ name: 'gone', match: { prefix: '/' }, upstream: 'gone' }],
  });
  const h2cPort = (gw.gateway.servers[1].address() as { port: number }).port;
  const client = echoClient(`127.0.0.1:${h2cPort}`);
  t.teardown(async () => {
    client.close();
    await gw.close();
  });
  const refused = await unary(client, `/${ECHO}/Unary`, {});
  t.equal(refused.err?.code, grpc.status.UNAVAILABLE, 'connection refused: UNAVAILABLE');
  t.equal(refused.metadata?.get('x-gateway-error')[0] ?? refused.trailers?.get('x-gateway-error')[0], 'UPSTREAM_CONNECT_FAILED');
});

t.test('grpc.health.v1 health checks take a NOT_SERVING target out of the rotation and bring it back', async (t) => {
  const up = await startGrpcUpstream();
  const gw = await startGateway({
    listen: { h2c: { port: 0 } },
    upstreams: {
      echo: { targets: [up.url], protocol: 'grpc', healthCheck: { enabled: true, grpcService: '', intervalMs: 50, timeoutMs: 1000, unhealthyThreshold: 1, healthyThreshold: 1 } },
    },
    routes: [{ name: 'echo', match: { prefix: '/' }, upstream: 'echo' }],
  });
  const h2cPort = (gw.gateway.servers[1].address() as { port: number }).port;
  const client = echoClient(`127.0.0.1:${h2cPort}`);
  t.teardown(async () => {
    client.close();
    await gw.close();
    await up.close();
  });
  const waitFor = async (cond: () => Promise<boolean>): Promise<void> => {
    for (let i = 0; i < 200 && !(await cond()); i++) await new Promise((r) => setTimeout(r, 25));
  };
  const status = async (): Promise<number | undefined> => (await unary(client, `/${ECHO}/Unary`, {})).err?.code;
  await waitFor(async () => (await status()) === undefined);
  t.equal(await status(), undefined, 'SERVING: calls go through');
  up.health.status = 2;
  await waitFor(async () => (await status()) === grpc.status.UNAVAILABLE);
  t.equal(await status(), grpc.status.UNAVAILABLE, 'NOT_SERVING: the only target is out, UNAVAILABLE');
  up.health.status = 1;
  await waitFor(async () => (await status()) === undefined);
  t.equal(await status(), undefined, 'SERVING again: back in the rotation');
});
