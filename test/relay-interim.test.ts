import t from 'tap';
import { METHODS, request, type IncomingHttpHeaders } from 'node:http';
import { connect } from 'node:net';
import { startGateway } from './helpers/gateway';
import { call } from './helpers/http';
import { startUpstream } from './helpers/upstream';

interface Interim {
  status: number;
  headers: IncomingHttpHeaders;
}

/** A GET that records the interim (1xx) responses it receives before the final one. */
function getWithInterim(base: string, path: string): Promise<{ interim: Interim[]; status: number; headers: IncomingHttpHeaders; body: string }> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const interim: Interim[] = [];
    const req = request({ host: u.hostname, port: u.port, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ interim, status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('information', (info) => interim.push({ status: info.statusCode, headers: info.headers }));
    req.setTimeout(5000, () => req.destroy(new Error('client timeout')));
    req.on('error', reject);
    req.end();
  });
}

t.test('every method Node accepts reaches the upstream on a route that lists none', async (t) => {
  const up = await startUpstream();
  const gw = await startGateway({ upstreams: { up: { targets: [up.url] } }, routes: [{ name: 'any', match: { prefix: '/any' }, upstream: 'up' }] } as never);
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  // CONNECT is a tunnel request, never a proxied exchange: Node hands it to a different event.
  for (const method of METHODS.filter((m) => m !== 'CONNECT')) {
    // QUERY must say what its body is (RFC 10008 §2): Fastify refuses it otherwise.
    const body = method === 'QUERY' ? { headers: { 'content-type': 'text/plain' }, body: 'q' } : {};
    const a = await call(gw.url, `/any/${method}`, { method, ...body });
    t.equal(a.status, 200, `${method} is proxied`);
    t.equal(up.seen.at(-1)?.method, method, `the upstream saw ${method}`);
  }
});

t.test('1xx interim responses are forwarded to HTTP/1.1 clients, never stored', async (t) => {
  const up = await startUpstream((req, res) => {
    if (req.url?.startsWith('/c/hints')) res.writeEarlyHints({ link: ['</style.css>; rel=preload; as=style', '</app.js>; rel=preload; as=script'], 'x-hint': 'yes' });
    if (req.url?.startsWith('/c/processing')) res.writeProcessing();
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=60', 'content-length': '5' });
    res.end('final');
  });
  const gw = await startGateway({ upstreams: { up: { targets: [up.url] } }, routes: [{ name: 'c', match: { prefix: '/c' }, upstream: 'up', cache: {} }] } as never);
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  const a = await getWithInterim(gw.url, '/c/hints');
  t.equal(a.interim.length, 1, 'one interim response');
  t.equal(a.interim[0]?.status, 103);
  t.equal(a.interim[0]?.headers.link, '</style.css>; rel=preload; as=style, </app.js>; rel=preload; as=script');
  t.equal(a.interim[0]?.headers['x-hint'], 'yes');
  t.same([a.status, a.body, a.headers['x-cache']], [200, 'final', 'MISS']);
  const b = await getWithInterim(gw.url, '/c/hints');
  t.same([b.status, b.body, b.headers['x-cache'], b.interim.length], [200, 'final', 'HIT', 0], 'the final response was stored, not the 103');
  const p = await getWithInterim(gw.url, '/c/processing');
  t.same(
    p.interim.map((i) => i.status),
    [102],
  );
  t.same([p.status, p.body], [200, 'final']);

  // An HTTP/1.0 client gets no 1xx (RFC 9110 §15.2).
  const raw = await new Promise<string>((resolve, reject) => {
    const s = connect(gw.port, '127.0.0.1', () => s.write('GET /c/hints?v=10 HTTP/1.0\r\nHost: x\r\n\r\n'));
    let out = '';
    s.on('data', (d: Buffer) => (out += d.toString('latin1')));
    s.on('end', () => resolve(out));
    s.on('error', reject);
  });
  t.match(raw, /^HTTP\/1\.1 200 /, 'the first status line is the final response');
  t.notMatch(raw, /103/);
});

t.test('Expect: 100-continue is answered by the gateway, and the body reaches the upstream without the Expect', async (t) => {
  const up = await startUpstream();
  const gw = await startGateway({ upstreams: { up: { targets: [up.url] } }, routes: [{ name: 'e', match: { prefix: '/e' }, upstream: 'up', cache: {} }] } as never);
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  const u = new URL(gw.url);
  const result = await new Promise<{ continued: boolean; status: number; body: string }>((resolve, reject) => {
    let continued = false;
    const req = request(
      { host: u.hostname, port: u.port, path: '/e/upload', method: 'POST', agent: false, headers: { expect: '100-continue', 'content-length': '5' } },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ continued, status: res.statusCode ?? 0, body }));
      },
    );
    req.on('continue', () => {
      continued = true;
      req.end('hello');
    });
    req.setTimeout(5000, () => req.destroy(new Error('client timeout')));
    req.on('error', reject);
  });
  t.ok(result.continued, 'the client got 100 Continue');
  t.equal(result.status, 200);
  t.equal(up.seen[0]?.body, 'hello');
  t.equal(up.seen[0]?.headers.expect, undefined, 'Expect is not forwarded');
});
