import { mkdtempSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { configHash } from '../src/observability/gateway-info';
import { startGateway, withTestDefaults, type TestConfig } from './helpers/gateway';
import { call } from './helpers/http';
import { metricValue } from './helpers/metrics';
import { startUpstream } from './helpers/upstream';

const TOKEN = 'admin-token-0123456789abcdef';

/** Sends `head` on a new connection and resolves with everything the gateway wrote back before the response ended. */
function rawExchange(port: number, head: string, until: (text: string) => boolean): Promise<{ socket: Socket; reply: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.write(head));
    let reply = '';
    socket.on('data', (d: Buffer) => {
      reply += d.toString('latin1');
      if (until(reply)) resolve({ socket, reply });
    });
    socket.on('error', reject);
  });
}

t.test('the request counter tells status codes apart, and folds codes outside its list into their class', async (t) => {
  const up = await startUpstream((req, res) => {
    res.statusCode = Number(req.url!.split('/').pop());
    res.end();
  });
  const gw = await startGateway({
    upstreams: { up: { targets: [up.url] } },
    routes: [{ name: 'codes', match: { prefix: '/codes' }, upstream: 'up' }],
  });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  for (const code of [200, 401, 401, 404, 429, 418, 451, 299, 503]) t.equal((await call(gw.url, `/codes/${code}`)).status, code);
  t.equal((await call(gw.url, '/nowhere')).status, 404);
  const count = (labels: Record<string, string>) => metricValue(gw.adminUrl, 'gateway_requests_total', labels);
  t.equal(await count({ route: 'codes', code: '200', status_class: '2xx' }), 1);
  t.equal(await count({ route: 'codes', code: '401', status_class: '4xx' }), 2, '401 on its own');
  t.equal(await count({ route: 'codes', code: '404' }), 1);
  t.equal(await count({ route: 'codes', code: '429' }), 1, '429 apart from 401 and 404');
  t.equal(await count({ route: 'codes', code: '4xx', status_class: '4xx' }), 2, '418 and 451 folded into 4xx');
  t.equal(await count({ route: 'codes', code: '2xx' }), 1, '299 folded into 2xx');
  t.equal(await count({ route: 'codes', code: '503', status_class: '5xx' }), 1);
  t.equal(await count({ route: '_unrouted', code: '404' }), 1);
  const exposition = (await call(gw.adminUrl, '/metrics')).body;
  t.notMatch(exposition, /code="418"|code="451"|code="299"/, 'no series for codes outside the list');
});

t.test('request and response bytes by route are the bytes on the wire', async (t) => {
  const up = await startUpstream((_req, res) => {
    res.setHeader('content-type', 'text/plain');
    res.end('x'.repeat(1000));
  });
  const gw = await startGateway({
    upstreams: { up: { targets: [up.url] } },
    routes: [
      { name: 'a', match: { prefix: '/a' }, upstream: 'up' },
      { name: 'b', match: { prefix: '/b' }, upstream: 'up' },
    ],
  });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  const body = 'y'.repeat(300);
  const heads = [
    `POST /a/1 HTTP/1.1\r\nHost: gw\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
    'GET /b/2 HTTP/1.1\r\nHost: gw\r\n\r\n',
    'GET /a/3 HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n',
  ];
  // One keep-alive connection, one request after the other: each is accounted to its own route.
  let socket: Socket | null = null;
  let written = { a: 0, b: 0 };
  const sent = { a: heads[0].length + heads[2].length, b: heads[1].length };
  for (const [i, head] of heads.entries()) {
    const route = i === 1 ? 'b' : 'a';
    const reply = await new Promise<string>((resolve, reject) => {
      let text = '';
      const onData = (d: Buffer) => {
        text += d.toString('latin1');
        if (text.endsWith('x'.repeat(1000))) {
          socket!.off('data', onData);
          resolve(text);
        }
      };
      if (socket === null) socket = connect(gw.port, '127.0.0.1');
      socket.on('data', onData);
      socket.on('error', reject);
      socket.write(head);
    });
    written = { ...written, [route]: written[route] + reply.length };
  }
  socket!.destroy();
  await sleep(50);
  t.equal(await metricValue(gw.adminUrl, 'gateway_request_bytes_total', { route: 'a' }), sent.a, 'request heads and bodies of route a');
  t.equal(await metricValue(gw.adminUrl, 'gateway_request_bytes_total', { route: 'b' }), sent.b);
  t.equal(await metricValue(gw.adminUrl, 'gateway_response_bytes_total', { route: 'a' }), written.a, 'response heads and bodies of route a');
  t.equal(await metricValue(gw.adminUrl, 'gateway_response_bytes_total', { route: 'b' }), written.b);
});

t.test('open client connections, build info', async (t) => {
  const gw = await startGateway({ routes: [] });
  t.teardown(() => gw.close());
  const open = (await Promise.all([1, 2, 3].map(() => rawExchange(gw.port, 'GET /x HTTP/1.1\r\nHost: gw\r\n\r\n', (r) => r.includes('\r\n\r\n{'))))).map((x) => x.socket);
  t.equal(await metricValue(gw.adminUrl, 'gateway_open_connections'), 3, 'three keep-alive connections');
  for (const s of open) s.destroy();
  await sleep(100);
  t.equal(await metricValue(gw.adminUrl, 'gateway_open_connections'), 0, 'none once they closed');
  const version = (JSON.parse((await import('node:fs')).readFileSync(join(__dirname, '..', 'package.json'), 'utf8')) as { version: string }).version;
  t.equal(await metricValue(gw.adminUrl, 'gateway_build_info', { version, node: process.version }), 1);
});

t.test('the configuration hash follows reloads; reloads are counted by result', async (t) => {
  const up = await startUpstream();
  const file = join(mkdtempSync(join(tmpdir(), 'gw-metrics-')), 'gateway.yaml');
  const config = (prefix: string): TestConfig => ({
    admin: { token: TOKEN },
    upstreams: { up: { targets: [up.url] } },
    routes: [{ name: 'r', match: { prefix }, upstream: 'up' }],
  });
  writeFileSync(file, JSON.stringify(withTestDefaults(config('/one'))));
  const gw = await startGateway(config('/one'), {}, { configFile: file });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  const reloads = (result: string) => metricValue(gw.adminUrl, 'gateway_config_reloads_total', { result });
  const first = configHash(gw.gateway.config);
  t.match(first, /^[0-9a-f]{12}$/);
  t.equal(await metricValue(gw.adminUrl, 'gateway_config_info', { hash: first }), 1);
  t.equal(await reloads('applied'), 0, 'reload series exist before any reload');

  writeFileSync(file, JSON.stringify(withTestDefaults(config('/two'))));
  const headers = { authorization: `Bearer ${TOKEN}` };
  t.equal((await call(gw.adminUrl, '/admin/reload', { method: 'POST', headers })).status, 200);
  const second = configHash(gw.gateway.config);
  t.not(second, first);
  const exposition = (await call(gw.adminUrl, '/metrics')).body;
  t.match(exposition, `gateway_config_info{hash="${second}"} 1`);
  t.notMatch(exposition, first, 'only the serving configuration has a series');
  t.equal(await reloads('applied'), 1);

  writeFileSync(file, '{ not: json');
  t.equal((await call(gw.adminUrl, '/admin/reload', { method: 'POST', headers })).status, 400);
  t.equal(await reloads('rejected'), 1);
  t.equal(await metricValue(gw.adminUrl, 'gateway_config_info', { hash: second }), 1, 'a rejected reload keeps the hash');
});
