import { rmSync } from 'node:fs';
import { connect as h2connect, constants, type ClientHttp2Session, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2';
import { connect as netConnect } from 'node:net';
import t, { type Test } from 'tap';
import { makeKey } from './helpers/auth';
import { makeCa } from './helpers/certs';
import { startGateway, type TestGateway } from './helpers/gateway';
import { call } from './helpers/http';
import { metricValue } from './helpers/metrics';
import { startUpstream, type TestUpstream } from './helpers/upstream';

const ca = makeCa();
t.teardown(() => rmSync(ca.dir, { recursive: true, force: true }));
const cert = ca.issue('api', { dns: ['api.example.com'] });

interface H2Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** One request on an HTTP/2 session; resolves with the whole answer. */
function h2request(session: ClientHttp2Session, headers: OutgoingHttpHeaders, body?: string | string[]): Promise<H2Answer> {
  return new Promise((resolve, reject) => {
    const stream = session.request(headers, { endStream: body === undefined });
    let status = 0;
    let got: IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    stream.on('response', (h) => {
      status = Number(h[':status']);
      got = h;
    });
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => resolve({ status, headers: got, body: Buffer.concat(chunks).toString('utf8') }));
    stream.on('error', reject);
    if (body !== undefined) {
      // Several DATA frames and no Content-Length: the length is unknown until the stream ends.
      for (const part of Array.isArray(body) ? body : [body]) stream.write(part);
      stream.end();
    }
  });
}

function tlsSession(port: number): Promise<ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const s = h2connect(`https://127.0.0.1:${port}`, { ca: ca.ca, servername: 'api.example.com' });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

function h2cSession(port: number): Promise<ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const s = h2connect(`http://127.0.0.1:${port}`);
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

async function gatewayFor(t: Test, up: TestUpstream, more: Record<string, unknown> = {}): Promise<{ gw: TestGateway; tlsPort: number; h2cPort: number }> {
  const gw = await startGateway({
    listen: { tls: { port: 0, certificates: [{ certFile: cert.certFile, keyFile: cert.keyFile }] }, h2c: { port: 0 } },
    upstreams: { up: { targets: [up.url] } },
    routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'up' }],
    ...more,
  });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  const addr = (i: number): number => (gw.gateway.servers[i].address() as { port: number }).port;
  return { gw, tlsPort: addr(1), h2cPort: addr(2) };
}

t.test('HTTP/2 over TLS (ALPN h2) and h2c reach an HTTP/1.1 upstream through the chain, HTTP/1.1 still served on the same TLS port', async (t) => {
  const up = await startUpstream((req, res, body) => {
    // Connection-specific headers an HTTP/1.1 upstream may send: none may reach an HTTP/2 client.
    res.writeHead(200, { 'content-type': 'application/json', connection: 'keep-alive, x-hop', 'keep-alive': 'timeout=5', 'x-hop': 'secret', 'transfer-encoding': 'chunked', 'x-upstream': 'yes' });
    res.end(JSON.stringify({ url: req.url, method: req.method, headers: req.headers, rawHeaders: req.rawHeaders, body, version: req.httpVersion }));
  });
  const { gw, tlsPort, h2cPort } = await gatewayFor(t, up);

  const tls = await tlsSession(tlsPort);
  t.teardown(() => tls.close());
  t.equal(tls.alpnProtocol, 'h2', 'ALPN picks h2 when the client offers it');
  const got = await h2request(tls, { ':method': 'GET', ':path': '/a/b?x=1', ':authority': 'api.example.com', 'x-client': 'c' });
  t.equal(got.status, 200);
  const seen = JSON.parse(got.body) as { url: string; headers: Record<string, string>; rawHeaders: string[]; version: string };
  t.equal(seen.url, '/a/b?x=1', ':path becomes the request target');
  t.equal(seen.version, '1.1', 'relayed to the upstream over HTTP/1.1');
  t.notOk(seen.rawHeaders.some((h) => h.startsWith(':')), 'no pseudo-header reaches the upstream');
  t.equal(seen.headers['x-forwarded-host'], 'api.example.com', ':authority is the client host');
  t.equal(seen.headers['x-forwarded-proto'], 'https');
  t.equal(seen.headers['x-client'], 'c');
  for (const h of ['connection', 'keep-alive', 'transfer-encoding', 'x-hop']) t.notOk(h in got.headers, `no ${h} on the HTTP/2 response`);
  t.equal(got.headers['x-upstream'], 'yes');
  t.ok(got.headers['x-request-id'], 'the gateway id');

  const crumbs = await h2request(tls, { ':method': 'GET', ':path': '/c', ':authority': 'api.example.com', cookie: ['a=1', 'b=2'] });
  const crumbSeen = JSON.parse(crumbs.body) as { rawHeaders: string[]; headers: Record<string, string> };
  t.equal(crumbSeen.headers.cookie, 'a=1; b=2', 'cookie crumbs are joined into one Cookie field (RFC 9113 §8.2.3)');
  t.equal(crumbSeen.rawHeaders.filter((h) => h.toLowerCase() === 'cookie').length, 1);

  const posted = await h2request(tls, { ':method': 'POST', ':path': '/post', ':authority': 'api.example.com', 'content-type': 'text/plain' }, ['hello ', 'over ', 'h2']);
  t.equal((JSON.parse(posted.body) as { body: string }).body, 'hello over h2', 'a body without Content-Length is relayed whole');

  const mismatch = await h2request(tls, { ':method': 'GET', ':path': '/m', ':authority': 'api.example.com', host: 'evil.example' });
  t.equal(mismatch.status, 400, 'a Host that names another authority than :authority is refused');
  t.equal(JSON.parse(mismatch.body).code, 'BAD_HOST');

  const h1 = await new Promise<string>((resolve, reject) => {
    import('node:https').then(({ request }) => {
      const req = request({ host: '127.0.0.1', port: tlsPort, path: '/h1', servername: 'api.example.com', ca: ca.ca, agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve(`${res.httpVersion} ${res.statusCode}`));
      });
      req.on('error', reject);
      req.end();
    }, reject);
  });
  t.equal(h1, '1.1 200', 'an HTTP/1.1 client on the same port still gets HTTP/1.1');

  const h2c = await h2cSession(h2cPort);
  t.teardown(() => h2c.close());
  const clear = await h2request(h2c, { ':method': 'GET', ':path': '/clear', ':authority': 'api.example.com' });
  t.equal(clear.status, 200, 'h2c with prior knowledge on listen.h2c');
  t.equal((JSON.parse(clear.body) as { headers: Record<string, string> }).headers['x-forwarded-proto'], 'http');

  t.equal(await metricValue(gw.adminUrl, 'gateway_requests_total', { route: 'r', code: '200' }), 5, 'HTTP/2 requests are counted like the others (and the HTTP/1.1 one)');
});

t.test('the HTTP/1.1 listener still refuses the HTTP/2 preface with 505', async (t) => {
  const up = await startUpstream();
  const { gw } = await gatewayFor(t, up);
  const answer = await new Promise<string>((resolve, reject) => {
    const socket = netConnect(gw.port, '127.0.0.1', () => socket.write('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'));
    let text = '';
    socket.on('data', (c: Buffer) => (text += c.toString('latin1')));
    socket.on('close', () => resolve(text));
    socket.on('error', reject);
  });
  t.match(answer, /^HTTP\/1\.1 505 /, 'the preface is answered 505');
  t.equal(up.seen.length, 0);
});

t.test('auth, rate limits and the access log work for HTTP/2 requests; errors are problem+json', async (t) => {
  const up = await startUpstream();
  const key = makeKey();
  const { gw, tlsPort } = await gatewayFor(t, up, {
    auth: { apiKeys: { header: 'X-API-Key' } },
    consumers: [{ id: 'alice', apiKeys: [{ prefix: key.prefix, sha256: key.sha256 }] }],
    routes: [{ name: 'keyed', match: { prefix: '/keyed' }, upstream: 'up', auth: { methods: ['apiKey'] }, rateLimit: { limits: [{ rate: 1, per: '1m' }] } }],
  });
  const s = await tlsSession(tlsPort);
  t.teardown(() => s.close());
  const none = await h2request(s, { ':path': '/keyed/1', ':authority': 'api.example.com' });
  t.equal(none.status, 401);
  t.equal(none.headers['content-type'], 'application/problem+json');
  t.equal(JSON.parse(none.body).code, 'UNAUTHENTICATED');
  const ok = await h2request(s, { ':path': '/keyed/1', ':authority': 'api.example.com', 'x-api-key': key.key });
  t.equal(ok.status, 200);
  const limited = await h2request(s, { ':path': '/keyed/2', ':authority': 'api.example.com', 'x-api-key': key.key });
  t.equal(limited.status, 429, 'the rate limit counts HTTP/2 requests');
  t.ok(limited.headers['retry-after'], 'Retry-After on 429');
  const missing = await h2request(s, { ':path': '/nowhere', ':authority': 'api.example.com' });
  t.equal(missing.status, 404);
  gw.gateway.flushLogs();
  const lines = gw.logs.filter((l) => l.msg === 'request completed');
  t.same(
    lines.map((l) => l.status),
    [401, 200, 429, 404],
    'one access line per HTTP/2 request',
  );
  t.same(lines.map((l) => l.reqId), [none, ok, limited, missing].map((a) => a.headers['x-request-id']));
});

t.test('drain: HTTP/2 sessions get GOAWAY and the gateway closes with a session open', async (t) => {
  const up = await startUpstream();
  const { gw, tlsPort } = await gatewayFor(t, up);
  const s = await tlsSession(tlsPort);
  t.equal((await h2request(s, { ':path': '/x', ':authority': 'api.example.com' })).status, 200);
  const goaway = new Promise<number>((resolve) => s.once('goaway', (code: number) => resolve(code)));
  await gw.close();
  t.equal(await goaway, constants.NGHTTP2_NO_ERROR, 'GOAWAY with NO_ERROR');
  s.destroy();
});

t.test('h2c plain check: a plain HTTP/1.1 call still works beside the HTTP/2 listeners', async (t) => {
  const up = await startUpstream();
  const { gw } = await gatewayFor(t, up);
  t.equal((await call(gw.url, '/plain')).status, 200);
});
