import type { Test } from 'tap';
import { bytes, mint, now } from './auth';
import { startCacheUpstream } from './cache';
import { startGateway, type TestGateway } from './gateway';
import { call, type Answer } from './http';

const SECRET = 'cache-test-secret-cache-test-secret!';
const ADMIN_TOKEN = 'cache-admin-token-0123456789';

/** The cache rules every store must keep, over real sockets; `store` is the gateway's store section. */
export async function cacheBehaviour(t: Test, store: () => Record<string, unknown>): Promise<void> {
  const up = await startCacheUpstream();
  const gw: TestGateway = await startGateway({
    admin: { token: ADMIN_TOKEN },
    store: store(),
    upstreams: { up: { targets: [up.url] } },
    auth: { jwt: { algorithms: ['HS256'], secret: SECRET } },
    consumers: [{ id: 'alice' }, { id: 'bob' }],
    routes: [
      { name: 'plain', match: { prefix: '/plain' }, upstream: 'up', cache: {} },
      { name: 'limited', match: { prefix: '/limited' }, upstream: 'up', cache: {}, rateLimit: { limits: [{ rate: 1000, per: '1m' }] } },
      { name: 'mine', match: { prefix: '/mine' }, upstream: 'up', cache: { scope: 'consumer' }, auth: { methods: ['jwt'] } },
      { name: 'deflt', match: { prefix: '/deflt' }, upstream: 'up', cache: { defaultTtl: 30 } },
      { name: 'small', match: { prefix: '/small' }, upstream: 'up', cache: { maxBodyBytes: 10 } },
      { name: 'swr', match: { prefix: '/swr' }, upstream: 'up', cache: { staleWhileRevalidate: 30 } },
      { name: 'norev', match: { prefix: '/norev' }, upstream: 'up', cache: { revalidationTtl: 0 } },
    ],
  } as never);
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  const get = (path: string, headers: Record<string, string> = {}): Promise<Answer> => call(gw.url, path, { headers });
  const xc = (a: Answer) => a.headers['x-cache'];

  for (const base of ['/plain', '/limited']) {
    t.test(`${base}: miss then hit, without touching the upstream; HEAD uses the GET entry`, async (t) => {
      const a = await get(`${base}/one?x=1`);
      const b = await get(`${base}/one?x=1`);
      t.equal(a.status, 200);
      t.equal(xc(a), 'MISS');
      t.equal(xc(b), 'HIT');
      t.equal(b.body, a.body, 'the stored body');
      t.equal(b.headers['content-type'], 'application/json');
      t.match(b.headers.age, /^\d+$/);
      t.equal(up.count(`${base}/one`), 1);
      const h = await call(gw.url, `${base}/one?x=1`, { method: 'HEAD' });
      t.equal(h.status, 200);
      t.equal(xc(h), 'HIT');
      t.equal(h.body, '');
      t.equal(up.count(`${base}/one`), 1);
      if (base === '/limited') t.ok(b.headers['ratelimit'], 'a hit carries the rate-limit headers: it consumed a token');
    });
  }

  t.test('query parameter order does not split entries', async (t) => {
    await get('/plain/q?a=1&b=2');
    const b = await get('/plain/q?b=2&a=1');
    t.equal(xc(b), 'HIT');
    t.equal(up.count('/plain/q'), 1);
  });

  for (const [name, q] of [
    ['no-store', 'cc=no-store'],
    ['private', 'cc=private,max-age=60'],
    ['Set-Cookie', 'sc=s%3D1'],
    ['Vary: *', 'vary=*'],
    ['a 500', 'status=500'],
    ['no freshness on a strict route', 'cc=public'],
  ]) {
    t.test(`${name} is never stored`, async (t) => {
      const path = `/plain/never-${name.replace(/\W/g, '')}?${q}`;
      const a = await get(path);
      const b = await get(path);
      t.equal(xc(a), 'MISS');
      t.equal(xc(b), 'MISS');
      t.not(a.body, b.body);
      t.equal(up.count(path.slice(0, path.indexOf('?'))), 2);
    });
  }

  t.test('defaultTtl stores a response without explicit freshness', async (t) => {
    await get('/deflt/x?cc=public');
    t.equal(xc(await get('/deflt/x?cc=public')), 'HIT');
    t.equal(up.count('/deflt/x'), 1);
  });

  t.test('Vary: each variant of a URL has its own entry', async (t) => {
    const path = '/plain/variants?vary=Accept-Language';
    const lang = (a: Answer) => JSON.parse(a.body).lang as string;
    const en = await get(path, { 'accept-language': 'en' });
    const fr = await get(path, { 'accept-language': 'fr' });
    const en2 = await get(path, { 'accept-language': 'en' });
    const fr2 = await get(path, { 'accept-language': 'fr' });
    t.same([xc(en), xc(fr), xc(en2), xc(fr2)], ['MISS', 'MISS', 'HIT', 'HIT']);
    t.same([lang(en), lang(fr), lang(en2), lang(fr2)], ['en', 'fr', 'en', 'fr']);
    t.equal(en2.body, en.body);
    t.equal(fr2.body, fr.body);
    t.equal(up.count('/plain/variants'), 2, 'fr did not overwrite en');
    const none = await get(path);
    t.equal(xc(none), 'MISS', 'no Accept-Language is a variant of its own');
    t.equal(lang(none), null);
    t.equal(xc(await get(path)), 'HIT');
    t.equal(xc(await get(path, { 'accept-language': 'en' })), 'HIT');
    t.equal(up.count('/plain/variants'), 3);
  });

  t.test('Vary: the named request headers are part of the match', async (t) => {
    const en = await get('/plain/vary?vary=Accept-Language', { 'accept-language': 'en' });
    const en2 = await get('/plain/vary?vary=Accept-Language', { 'accept-language': 'en' });
    const fr = await get('/plain/vary?vary=Accept-Language', { 'accept-language': 'fr' });
    t.equal(xc(en2), 'HIT');
    t.equal(en2.body, en.body);
    t.equal(xc(fr), 'MISS');
    t.equal(JSON.parse(fr.body).lang, 'fr', 'fr never gets the en response');
    t.equal(up.count('/plain/vary'), 2);
  });

  t.test('Authorization A then B: neither served from nor stored in the shared cache', async (t) => {
    const a = await get('/plain/auth', { authorization: 'Bearer A' });
    const b = await get('/plain/auth', { authorization: 'Bearer B' });
    t.equal(JSON.parse(a.body).auth, 'Bearer A');
    t.equal(JSON.parse(b.body).auth, 'Bearer B');
    t.equal(xc(b), 'MISS');
    t.equal(up.count('/plain/auth'), 2);
    // An anonymous entry is not served to a request with credentials either.
    await get('/plain/auth2');
    const c = await get('/plain/auth2', { authorization: 'Bearer C' });
    t.equal(JSON.parse(c.body).auth, 'Bearer C');
    t.equal(up.count('/plain/auth2'), 2);
  });

  t.test('with credentials, a public response is shared', async (t) => {
    await get('/plain/pub?cc=public,max-age=60', { authorization: 'Bearer A' });
    const b = await get('/plain/pub?cc=public,max-age=60', { authorization: 'Bearer B' });
    t.equal(xc(b), 'HIT');
    t.equal(up.count('/plain/pub'), 1);
  });

  t.test('scope consumer: each consumer its own entries', async (t) => {
    const alice = `Bearer ${await mint({ sub: 'alice', exp: now() + 600 }, bytes(SECRET))}`;
    const bob = `Bearer ${await mint({ sub: 'bob', exp: now() + 600 }, bytes(SECRET))}`;
    const a1 = await get('/mine/data', { authorization: alice });
    const b1 = await get('/mine/data', { authorization: bob });
    const a2 = await get('/mine/data', { authorization: alice });
    const b2 = await get('/mine/data', { authorization: bob });
    t.equal(a1.status, 200);
    t.equal(xc(b1), 'MISS', "bob never gets alice's entry");
    t.equal(xc(a2), 'HIT');
    t.equal(xc(b2), 'HIT');
    t.equal(a2.body, a1.body);
    t.equal(b2.body, b1.body);
    t.not(a1.body, b1.body);
    t.equal(up.count('/mine/data'), 2);
  });

  t.test('client no-store bypasses; no-cache goes upstream and refreshes', async (t) => {
    await get('/plain/cl');
    const b = await get('/plain/cl', { 'cache-control': 'no-store' });
    t.equal(xc(b), 'BYPASS');
    const c = await get('/plain/cl', { 'cache-control': 'no-cache' });
    t.equal(xc(c), 'MISS');
    const d = await get('/plain/cl');
    t.equal(xc(d), 'HIT');
    t.equal(d.body, c.body, 'the refreshed entry');
    t.equal(up.count('/plain/cl'), 3);
  });

  t.test('a successful write invalidates the path; a failed one does not', async (t) => {
    await get('/plain/w?x=1');
    t.equal(xc(await get('/plain/w?x=1')), 'HIT');
    t.equal((await call(gw.url, '/plain/w?status=400', { method: 'POST', body: '{}' })).status, 400);
    t.equal(xc(await get('/plain/w?x=1')), 'HIT', 'a 4xx write leaves the entry');
    t.equal((await call(gw.url, '/plain/w', { method: 'POST', body: '{}' })).status, 200);
    t.equal(xc(await get('/plain/w?x=1')), 'MISS', 'a 2xx write invalidated every query of the path');
    t.equal(xc(await get('/plain/w?x=1')), 'HIT');
    t.equal(up.count('/plain/w'), 4);
  });

  t.test('admin purge by prefix, exact path and route', async (t) => {
    for (const p of ['/plain/pp/a', '/plain/pp/b/c', '/plain/ppx']) await get(p);
    const purge = (q: string) => call(gw.adminUrl, `/admin/cache/purge?${q}`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    t.equal((await call(gw.adminUrl, '/admin/cache/purge?prefix=/plain/pp', { method: 'POST' })).status, 401);
    t.equal((await purge('')).status, 400);
    t.equal((await purge('prefix=/plain/pp')).status, 200);
    t.equal(xc(await get('/plain/pp/a')), 'MISS');
    t.equal(xc(await get('/plain/pp/b/c')), 'MISS');
    t.equal(xc(await get('/plain/ppx')), 'HIT', 'a prefix purges at segment boundaries');
    t.equal((await purge('path=/plain/pp/a')).status, 200);
    t.equal(xc(await get('/plain/pp/a')), 'MISS');
    t.equal(xc(await get('/plain/pp/b/c')), 'HIT');
    t.equal((await purge('route=plain')).status, 200);
    t.equal(xc(await get('/plain/ppx')), 'MISS');
    t.equal((await purge('route=nope')).status, 400);
  });

  t.test('100 concurrent misses make one upstream request', async (t) => {
    const answers = await Promise.all(Array.from({ length: 100 }, () => get('/plain/flight?delay=200')));
    t.ok(answers.every((a) => a.status === 200));
    t.equal(new Set(answers.map((a) => a.body)).size, 1, 'all got the one response');
    t.equal(up.count('/plain/flight'), 1);
  });

  t.test('a response to revalidate on every use (no-cache) is not shared with the requests that waited for it', async (t) => {
    const answers = await Promise.all(Array.from({ length: 5 }, () => get('/plain/flight-nc?delay=200&cc=no-cache&etag=x')));
    t.ok(answers.every((a) => a.status === 200));
    t.same(answers.map(xc), answers.map(() => 'MISS'), 'none was answered from the cache');
    t.equal(up.count('/plain/flight-nc'), 5, 'each went to the upstream');
  });

  t.test('a truncated upstream body is not stored; a body over maxBodyBytes is not stored', async (t) => {
    await t.rejects(get('/plain/trunc?trunc=1'));
    await t.rejects(get('/plain/trunc?trunc=1'));
    t.equal(up.count('/plain/trunc'), 2);
    await get('/small/big');
    t.equal(xc(await get('/small/big')), 'MISS');
    t.equal(up.count('/small/big'), 2);
  });

  t.test('revalidation: a no-cache entry with an ETag is revalidated; the 304 refreshes it', async (t) => {
    const path = '/plain/rv/etag?etag=a&cc=no-cache&cc304=max-age=60';
    const a = await get(path);
    t.equal(xc(a), 'MISS');
    t.equal(up.last('/plain/rv/etag')?.['if-none-match'], undefined, 'the first request is not conditional');
    const b = await get(path);
    t.equal(up.count('/plain/rv/etag'), 2, 'the upstream was asked');
    t.equal(up.last('/plain/rv/etag')?.['if-none-match'], '"a"', 'with the stored ETag');
    t.equal(b.status, 200, 'the client gets the stored response, not the 304');
    t.equal(xc(b), 'REVALIDATED');
    t.equal(b.body, a.body);
    t.equal(b.headers['content-length'], String(Buffer.byteLength(a.body)));
    t.equal(b.headers['content-type'], 'application/json');
    t.equal(b.headers.etag, '"a"');
    t.equal(b.headers['cache-control'], 'max-age=60', "the stored headers were updated with the 304's");
    t.equal(b.headers['x-validated'], String(JSON.parse(a.body).n + 1), 'including headers only the 304 carried');
    const c = await get(path);
    t.equal(xc(c), 'HIT', "the 304's max-age made the entry fresh again");
    t.equal(c.body, a.body);
    t.equal(c.headers['cache-control'], 'max-age=60');
    t.equal(up.count('/plain/rv/etag'), 2);
  });

  t.test('revalidation: an entry stale by age is kept and revalidated with If-Modified-Since when it has only Last-Modified', async (t) => {
    const lm = 'Wed, 21 Oct 2015 07:28:00 GMT';
    const path = `/plain/rv/lm?lm=${encodeURIComponent(lm)}&cc=max-age=1`;
    const a = await get(path);
    t.equal(xc(a), 'MISS');
    t.equal(xc(await get(path)), 'HIT');
    await new Promise((r) => setTimeout(r, 1100));
    const b = await get(path);
    t.equal(xc(b), 'REVALIDATED');
    t.equal(b.status, 200);
    t.equal(b.body, a.body);
    const seen = up.last('/plain/rv/lm');
    t.equal(seen?.['if-modified-since'], lm);
    t.equal(seen?.['if-none-match'], undefined);
    t.equal(xc(await get(path)), 'HIT');
    t.equal(up.count('/plain/rv/lm'), 2);
  });

  t.test('revalidation: a 200 answer replaces the entry', async (t) => {
    const path = '/plain/rv/changed?etag=a&cc=no-cache';
    const a = await get(path);
    up.etags.set('/plain/rv/changed', 'b');
    const b = await get(path);
    t.equal(up.last('/plain/rv/changed')?.['if-none-match'], '"a"');
    t.equal(b.status, 200);
    t.equal(xc(b), 'MISS');
    t.not(b.body, a.body, 'the new representation');
    t.equal(b.headers.etag, '"b"');
    const c = await get(path);
    t.equal(up.last('/plain/rv/changed')?.['if-none-match'], '"b"', 'the new entry is revalidated with its own ETag');
    t.equal(xc(c), 'REVALIDATED');
    t.equal(c.body, b.body);
    t.equal(up.count('/plain/rv/changed'), 3);
  });

  t.test("revalidation: a client's Cache-Control: no-cache revalidates a fresh entry", async (t) => {
    const path = '/plain/rv/client?etag=a';
    const a = await get(path);
    const b = await get(path, { 'cache-control': 'no-cache' });
    t.equal(xc(b), 'REVALIDATED');
    t.equal(b.body, a.body);
    t.equal(up.last('/plain/rv/client')?.['if-none-match'], '"a"');
    t.equal(xc(await get(path)), 'HIT');
    t.equal(up.count('/plain/rv/client'), 2);
  });

  t.test("revalidation: a client's own validators pass through unchanged", async (t) => {
    const path = '/plain/rv/own?etag=a&cc=no-cache';
    const a = await get(path);
    const b = await get(path, { 'if-none-match': '"zzz"' });
    t.equal(up.last('/plain/rv/own')?.['if-none-match'], '"zzz"', 'not replaced by the stored ETag');
    t.equal(b.status, 200);
    t.equal(xc(b), 'MISS');
    const c = await get(path, { 'if-none-match': '"a"' });
    t.equal(up.last('/plain/rv/own')?.['if-none-match'], '"a"');
    t.equal(c.status, 304, "the upstream's 304 answers the client's conditional request");
    t.equal(c.body, '');
    t.equal(up.count('/plain/rv/own'), 3);
    t.ok(a.body);
  });

  t.test("a client's conditional GET is answered 304 from a fresh entry", async (t) => {
    const path = '/plain/rv/hit304?etag=a';
    const a = await get(path);
    const b = await get(path, { 'if-none-match': 'W/"x", "a"' });
    t.equal(b.status, 304);
    t.equal(xc(b), 'HIT');
    t.equal(b.body, '');
    t.equal(b.headers.etag, '"a"');
    t.equal(b.headers['content-type'], undefined, 'no representation metadata on a 304');
    const c = await get(path, { 'if-none-match': '"other"' });
    t.equal(c.status, 200);
    t.equal(xc(c), 'HIT');
    t.equal(c.body, a.body);
    t.equal(up.count('/plain/rv/hit304'), 1);
  });

  t.test('revalidationTtl 0: a response that is not fresh is not stored, and nothing is conditional', async (t) => {
    const path = '/norev/x?etag=a&cc=no-cache';
    t.equal(xc(await get(path)), 'MISS');
    t.equal(xc(await get(path)), 'MISS');
    t.equal(up.last('/norev/x')?.['if-none-match'], undefined);
    t.equal(up.count('/norev/x'), 2);
  });

  /** Polls until `path` is a hit (a background refresh landed), or gives up after ~3 s. */
  const untilHit = async (path: string): Promise<Answer> => {
    let a = await get(path);
    for (let i = 0; i < 60 && xc(a) !== 'HIT'; i++) {
      await new Promise((r) => setTimeout(r, 50));
      a = await get(path);
    }
    return a;
  };

  t.test('stale-while-revalidate: stale answered at once, one background refresh for concurrent requests', async (t) => {
    const path = '/swr/bg?cc=max-age=1&delay=500';
    const a = await get(path);
    t.equal(xc(a), 'MISS');
    await new Promise((r) => setTimeout(r, 1100));
    const started = Date.now();
    const stale = await Promise.all(Array.from({ length: 10 }, () => get(path)));
    const took = Date.now() - started;
    t.ok(took < 400, `all answered before the 500 ms upstream could have (${took} ms)`);
    t.same(
      stale.map((s) => [s.status, xc(s), s.body]),
      stale.map(() => [200, 'STALE', a.body]),
      'every request got the stale entry',
    );
    // The refresh left with the first stale answer; give it a moment to reach the upstream.
    for (let i = 0; i < 40 && up.count('/swr/bg') < 2; i++) await new Promise((r) => setTimeout(r, 25));
    t.equal(up.count('/swr/bg'), 2, 'one background refresh reached the upstream');
    const fresh = await untilHit(path);
    t.equal(xc(fresh), 'HIT', 'the refresh landed');
    t.not(fresh.body, a.body, 'with the new response');
    t.equal(JSON.parse(fresh.body).n, JSON.parse(a.body).n + 1);
    t.equal(up.count('/swr/bg'), 2);
  });

  t.test('stale-while-revalidate: the background refresh is conditional and a 304 refreshes the entry', async (t) => {
    const path = '/swr/cond?etag=a&cc=max-age=1&delay=200';
    const a = await get(path);
    await new Promise((r) => setTimeout(r, 1100));
    const b = await get(path);
    t.equal(xc(b), 'STALE');
    t.equal(b.body, a.body);
    const c = await untilHit(path);
    t.equal(xc(c), 'HIT');
    t.equal(c.body, a.body, 'the stored body, refreshed');
    t.equal(up.count('/swr/cond'), 2);
    t.equal(up.last('/swr/cond')?.['if-none-match'], '"a"', 'the refresh carried the stored ETag');
  });

  t.test('stale-while-revalidate: a failing background refresh changes nothing; a later one lands', async (t) => {
    const path = '/swr/fail?cc=max-age=1';
    const a = await get(path);
    await new Promise((r) => setTimeout(r, 1100));
    up.broken.add('/swr/fail');
    const b = await get(path);
    t.equal(xc(b), 'STALE');
    for (let i = 0; i < 40 && up.count('/swr/fail') < 2; i++) await new Promise((r) => setTimeout(r, 25));
    t.ok(up.count('/swr/fail') >= 2, 'the refresh was tried');
    await new Promise((r) => setTimeout(r, 200));
    const tried = up.count('/swr/fail');
    await new Promise((r) => setTimeout(r, 200));
    t.equal(up.count('/swr/fail'), tried, 'and given up on (within the retry policy), not repeated');
    const c = await get(path);
    t.equal(c.status, 200);
    t.equal(xc(c), 'STALE', 'the entry still answers');
    t.equal(c.body, a.body);
    up.broken.delete('/swr/fail');
    const d = await untilHit(path);
    t.equal(xc(d), 'HIT');
    t.not(d.body, a.body);
  });

  t.test('metrics count results and stores by route', async (t) => {
    const m = (await call(gw.adminUrl, '/metrics', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).body;
    t.match(m, /gateway_cache_requests_total\{route="plain",result="hit"\} [1-9]/);
    t.match(m, /gateway_cache_requests_total\{route="plain",result="bypass"\} [1-9]/);
    t.match(m, /gateway_cache_stores_total\{route="plain"\} [1-9]/);
    t.match(m, /gateway_cache_requests_total\{route="plain",result="revalidated"\} [1-9]/);
  });
}
