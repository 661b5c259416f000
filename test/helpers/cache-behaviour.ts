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
    upstreams: { up: { targets: [up.url] }, slow: { targets: [up.url], timeouts: { requestMs: 300 }, retries: { maxRetries: 0 } }, failing: { targets: [up.url] } },
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
      // An upstream of its own: the failures it is made to answer trip its breaker, not the other routes'.
      { name: 'sie', match: { prefix: '/sie' }, upstream: 'failing', cache: { staleIfError: 60 } },
      { name: 'tgt', match: { prefix: '/tgt' }, upstream: 'up', cache: { targetedFields: ['Gateway-Cache-Control', 'CDN-Cache-Control'] } },
      { name: 'tmo', match: { prefix: '/tmo' }, upstream: 'slow', cache: { defaultTtl: 30 } },
      { name: 'authd', match: { prefix: '/authd' }, upstream: 'up', cache: {}, auth: { methods: ['jwt'] } },
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
    ['a 500 without explicit freshness', 'status=500&cc=public'],
    ['a 206', 'status=206'],
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
    t.equal(xc(b), 'BYPASS', 'a response the shared cache may not store for a request with credentials');
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

  t.test('HTTP dates are strict: an Expires in any other form is already expired', async (t) => {
    const cases: [string, string, string][] = [
      ['imf', 'Thu, 18 Aug 2050 02:01:18 GMT', 'HIT'],
      ['rfc850', 'Thursday, 18-Aug-50 02:01:18 GMT', 'HIT'],
      ['asctime', 'Thu Aug 18 02:01:18 2050', 'HIT'],
      ['nocomma', 'Thu 18 Aug 2050 02:01:18 GMT', 'MISS'],
      ['utc', 'Thu, 18 Aug 2050 02:01:18 UTC', 'MISS'],
      ['offset', 'Thu, 18 Aug 2050 02:01:18 +0000', 'MISS'],
      ['iso', '2050-08-18T02:01:18Z', 'MISS'],
      ['rfc850past', 'Thursday, 18-Aug-77 02:01:18 GMT', 'MISS'],
    ];
    for (const [name, date, want] of cases) {
      const path = `/plain/date-${name}?cc=&hdr=${encodeURIComponent(`Expires:${date}`)}`;
      await get(path);
      t.equal(xc(await get(path)), want, `${name}: ${date}`);
    }
    // A malformed Date is ignored (now stands in): the Expires of a valid one still counts from it.
    const bad = `/plain/date-baddate?cc=&hdr=${encodeURIComponent('Expires:Thu, 18 Aug 2050 02:01:18 GMT')}&hdr=${encodeURIComponent('Date:Thu 18 Aug 2050 02:01:17 GMT')}`;
    await get(bad);
    t.equal(xc(await get(bad)), 'HIT', 'a Date in a lenient form does not make the Expires a one-second lifetime');
  });

  t.test('Age is delta-seconds: the first of a list counts, anything else is ignored', async (t) => {
    const list = `/plain/age-list?cc=max-age=60&hdr=${encodeURIComponent('Age:30, 5')}`;
    await get(list);
    const a = await get(list);
    t.equal(xc(a), 'HIT');
    t.ok(Number(a.headers.age) >= 30 && Number(a.headers.age) < 40, `age counts from the first value (${a.headers.age})`);
    const frac = `/plain/age-frac?cc=max-age=60&hdr=${encodeURIComponent('Age:70.5')}`;
    await get(frac);
    const b = await get(frac);
    t.equal(xc(b), 'HIT', 'a non-integer Age is ignored, not read as 70 s (which would be stale)');
    t.ok(Number(b.headers.age) < 10);
  });

  t.test('explicit freshness makes any final status storable; cache.statuses governs the rest', async (t) => {
    for (const status of [500, 418]) {
      const path = `/plain/st-${status}?status=${status}&cc=max-age=60`;
      const a = await get(path);
      const b = await get(path);
      t.equal(a.status, status);
      t.same([xc(a), xc(b), b.status, b.body], ['MISS', 'HIT', status, a.body], `${status} with max-age is stored`);
    }
    const d = '/deflt/st-418?status=418&cc=public';
    await get(d);
    t.equal(xc(await get(d)), 'MISS', 'defaultTtl stores only the statuses listed');
    const ok = '/deflt/st-410?status=410&cc=public';
    await get(ok);
    t.equal(xc(await get(ok)), 'HIT', 'a listed status is stored by defaultTtl');
  });

  t.test("the gateway's own errors are never stored", async (t) => {
    const a = await get('/tmo/x?delay=600');
    t.equal(a.status, 504);
    const b = await get('/tmo/x?delay=600');
    t.equal(b.status, 504);
    t.not(xc(b), 'HIT');
    t.equal(up.count('/tmo/x'), 2);
  });

  t.test('any unsafe or unknown method invalidates the target and its same-host Location / Content-Location', async (t) => {
    const seed = async (p: string) => {
      await get(p);
      t.equal(xc(await get(p)), 'HIT', `${p} cached`);
    };
    for (const method of ['LINK', 'M-SEARCH', 'PROPPATCH']) {
      const p = `/plain/m-${method}`;
      await seed(p);
      t.equal((await call(gw.url, p, { method })).status, 200, `${method} reaches the upstream`);
      t.equal(xc(await get(p)), 'MISS', `a 2xx ${method} invalidated the entry`);
    }
    await seed('/plain/m-OPTIONS');
    await call(gw.url, '/plain/m-OPTIONS', { method: 'OPTIONS' });
    t.equal(xc(await get('/plain/m-OPTIONS')), 'HIT', 'a safe method does not');
    const host = { host: 'api.example' };
    const getH = (p: string) => call(gw.url, p, { headers: host });
    for (const p of ['/plain/loc/item', '/plain/loc/cl', '/plain/loc/abs', '/plain/loc/other']) await getH(p);
    const loc = (v: string) => `hdr=${encodeURIComponent(v)}`;
    const post = `/plain/loc?${loc('Location:/plain/loc/item')}&${loc('Content-Location:loc/cl')}`;
    t.equal((await call(gw.url, post, { method: 'POST', body: '{}', headers: host })).status, 200);
    t.equal(xc(await getH('/plain/loc/item')), 'MISS', 'the Location path');
    t.equal(xc(await getH('/plain/loc/cl')), 'MISS', 'the Content-Location path (relative reference)');
    const abs = `/plain/loc?${loc('Location:http://api.example/plain/loc/abs')}&${loc('Content-Location:http://elsewhere.example/plain/loc/other')}`;
    await call(gw.url, abs, { method: 'PUT', body: '{}', headers: host });
    t.equal(xc(await getH('/plain/loc/abs')), 'MISS', 'an absolute Location on the same host');
    t.equal(xc(await getH('/plain/loc/other')), 'HIT', 'another host is not ours to invalidate');
  });

  t.test('CDN-Cache-Control and a route-named targeted field come before Cache-Control', async (t) => {
    const cases: [string, string, string][] = [
      ['/plain/cdn-store', `cc=no-store&hdr=${encodeURIComponent('CDN-Cache-Control:max-age=60')}`, 'HIT'],
      ['/plain/cdn-nostore', `cc=max-age=60&hdr=${encodeURIComponent('CDN-Cache-Control:no-store')}`, 'MISS'],
      ['/plain/cdn-invalid', `cc=no-store&hdr=${encodeURIComponent('CDN-Cache-Control:MAX-AGE=60')}`, 'MISS'],
      ['/plain/cdn-own', `cc=max-age=60&hdr=${encodeURIComponent('Gateway-Cache-Control:no-store')}`, 'HIT'],
      ['/tgt/own', `cc=no-store&hdr=${encodeURIComponent('Gateway-Cache-Control:max-age=60')}&hdr=${encodeURIComponent('CDN-Cache-Control:no-store')}`, 'HIT'],
      ['/tgt/own-nostore', `cc=max-age=60&hdr=${encodeURIComponent('Gateway-Cache-Control:no-store')}&hdr=${encodeURIComponent('CDN-Cache-Control:max-age=60')}`, 'MISS'],
      ['/tgt/own-invalid', `cc=no-store&hdr=${encodeURIComponent('Gateway-Cache-Control:max-age=60;;')}&hdr=${encodeURIComponent('CDN-Cache-Control:max-age=60')}`, 'HIT'],
    ];
    for (const [path, q, want] of cases) {
      const a = await get(`${path}?${q}`);
      t.equal(xc(await get(`${path}?${q}`)), want, `${path}`);
      t.ok(a.headers['cdn-cache-control'] !== undefined || !q.includes('CDN'), 'the targeted field reaches the client');
    }
  });

  t.test('stale-while-revalidate and stale-if-error directives, capped by the route; must-revalidate, proxy-revalidate and s-maxage never stale', async (t) => {
    const swr = (cc: string) => `/swr/d-${cc.replace(/\W/g, '')}?cc=${encodeURIComponent(cc)}`;
    const sie = (cc: string) => `/sie/d-${cc.replace(/\W/g, '')}?cc=${encodeURIComponent(cc)}`;
    const swrCases: [string, string][] = [
      ['max-age=1', 'STALE'],
      ['max-age=1, stale-while-revalidate=0', 'MISS'],
      ['max-age=1, stale-while-revalidate=600', 'STALE'],
      ['max-age=1, must-revalidate', 'MISS'],
      ['max-age=1, proxy-revalidate', 'MISS'],
      ['s-maxage=1', 'MISS'],
    ];
    const sieCases: [string, boolean][] = [
      ['max-age=1', true],
      ['max-age=1, stale-if-error=0', false],
      ['max-age=1, must-revalidate', false],
      ['max-age=1, proxy-revalidate', false],
      ['s-maxage=1', false],
    ];
    for (const [cc] of swrCases) await get(swr(cc));
    for (const [cc] of sieCases) await get(sie(cc));
    await new Promise((r) => setTimeout(r, 1100));
    for (const [cc, want] of swrCases) t.equal(xc(await get(swr(cc))), want, `swr route, ${cc}`);
    for (const [cc] of sieCases) up.broken.add(sie(cc).slice(0, sie(cc).indexOf('?')));
    for (const [cc, stale] of sieCases) {
      const a = await get(sie(cc));
      // Not stale: the upstream failure as usual (502, or 503 once the failures opened the breaker).
      t.same([a.status === 200, xc(a) === 'STALE'], [stale, stale], `sie route, upstream down, ${cc}: ${a.status} ${xc(a)}`);
    }
  });

  t.test('a single Range of a stored 200 is answered 206 from the cache', async (t) => {
    const path = '/plain/range?etag=r&lm=' + encodeURIComponent('Wed, 21 Oct 2015 07:28:00 GMT');
    const full = await get(path);
    const len = Buffer.byteLength(full.body);
    const range = (r: string, extra: Record<string, string> = {}) => get(path, { range: r, ...extra });
    const a = await range('bytes=0-4');
    t.same([a.status, xc(a), a.body, a.headers['content-range'], a.headers['content-length']], [206, 'HIT', full.body.slice(0, 5), `bytes 0-4/${len}`, '5']);
    const b = await range('bytes=-3');
    t.same([b.status, b.body, b.headers['content-range']], [206, full.body.slice(-3), `bytes ${len - 3}-${len - 1}/${len}`]);
    const c = await range(`bytes=5-${len + 100}`);
    t.same([c.status, c.body, c.headers['content-range']], [206, full.body.slice(5), `bytes 5-${len - 1}/${len}`]);
    const d = await range(`bytes=${len}-`);
    t.same([d.status, d.body, d.headers['content-range']], [416, '', `bytes */${len}`]);
    for (const whole of ['bytes=0-1,3-4', 'bytes=x-', 'bytes=5-2', 'items=0-4']) {
      const w = await range(whole);
      t.same([w.status, w.body], [200, full.body], `${whole}: the whole response`);
    }
    t.equal((await range('bytes=0-4', { 'if-range': '"r"' })).status, 206, 'If-Range: the stored strong ETag');
    t.equal((await range('bytes=0-4', { 'if-range': '"other"' })).status, 200, 'If-Range: another ETag gets the whole response');
    t.equal((await range('bytes=0-4', { 'if-range': 'W/"r"' })).status, 200, 'If-Range: a weak tag never matches');
    t.equal((await range('bytes=0-4', { 'if-range': 'Wed, 21 Oct 2015 07:28:00 GMT' })).status, 206, 'If-Range: the Last-Modified date');
    t.equal((await range('bytes=0-4', { 'if-range': 'Wed, 21 Oct 2015 07:28:01 GMT' })).status, 200);
    t.equal(up.count('/plain/range'), 1);
  });

  t.test('a shared cache on an authenticated route: requests with credentials count as bypass (credentials)', async (t) => {
    const token = `Bearer ${await mint({ sub: 'alice', exp: now() + 600 }, bytes(SECRET))}`;
    const a = await get('/authd/x', { authorization: token });
    const b = await get('/authd/x', { authorization: token });
    t.same([a.status, xc(a), xc(b)], [200, 'BYPASS', 'BYPASS']);
    const p = await get('/authd/pub?cc=public,max-age=60', { authorization: token });
    t.equal(xc(p), 'MISS', 'a public response is stored');
    t.equal(xc(await get('/authd/pub?cc=public,max-age=60', { authorization: token })), 'HIT');
    const m = (await call(gw.adminUrl, '/metrics', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).body;
    t.match(m, /gateway_cache_requests_total\{route="authd",result="bypass",reason="credentials"\} 2\n/);
    t.match(m, /gateway_cache_requests_total\{route="authd",result="miss",reason=""\} 1\n/);
  });

  t.test('metrics count results and stores by route', async (t) => {
    const m = (await call(gw.adminUrl, '/metrics', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).body;
    t.match(m, /gateway_cache_requests_total\{route="plain",result="hit",reason=""\} [1-9]/);
    t.match(m, /gateway_cache_requests_total\{route="plain",result="bypass",reason="client"\} [1-9]/);
    t.match(m, /gateway_cache_stores_total\{route="plain"\} [1-9]/);
    t.match(m, /gateway_cache_requests_total\{route="plain",result="revalidated",reason=""\} [1-9]/);
  });
}
