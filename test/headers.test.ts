import t from 'tap';
import { HeaderStrings } from '../src/proxy/header-strings';
import { HeaderNames, REQUEST_DROP, copyRequestHeaders, copyResponseHeaders, responseHeaderKind, type ClientHeaderFacts, type ResponseHeaderFacts } from '../src/proxy/headers';

const noFacts = (): ClientHeaderFacts => ({ host: undefined, xForwardedFor: undefined, xForwardedProto: undefined, xForwardedHost: undefined, forwarded: undefined, hasBody: false });

t.test('header name sets find names in any case, and only their members', async (t) => {
  const set = new HeaderNames(['Connection', 'x-api-key', 'connection']);
  for (const n of ['connection', 'CONNECTION', 'Connection']) t.equal(set.find(n), 'connection', n);
  t.equal(set.find('X-Api-Key'), 'x-api-key');
  t.equal(set.find('user-agent'), null, 'same length, other first letter');
  t.equal(set.find('content-type'), null, 'other length');
  t.equal(set.find('cookie-jar'), null, 'same shape as a member, another name');
  t.equal(set.find('connectioN'), 'connection');
  t.equal(set.find('c0nnection'), null);
  const long = 'x-' + 'a'.repeat(80);
  set.add(long.toUpperCase());
  t.equal(set.find(long), long, 'names longer than the shape table');
  t.equal(set.find(long + 'b'), null);
  t.same([...set], ['connection', 'x-api-key', long], 'each name once, in lower case');
});

t.test('request headers: dropped in any case, the relay facts read, the body announced', async (t) => {
  const out: string[] = [];
  const facts = noFacts();
  copyRequestHeaders(
    ['Host', 'a.example', 'User-Agent', 'ua', 'CONNECTION', 'keep-alive, X-Hop', 'x-hop', '1', 'X-Forwarded-For', '10.0.0.1', 'x-forwarded-for', '10.0.0.2', 'Content-Length', '5', 'TE', 'trailers', 'Accept', '*/*'],
    new HeaderNames(REQUEST_DROP),
    out,
    facts,
  );
  t.same(out, ['User-Agent', 'ua', 'Content-Length', '5', 'Accept', '*/*']);
  t.equal(facts.host, 'a.example');
  t.equal(facts.xForwardedFor, '10.0.0.1, 10.0.0.2');
  t.equal(facts.hasBody, true);
  const empty = noFacts();
  copyRequestHeaders(['CONTENT-LENGTH', '0'], new HeaderNames(REQUEST_DROP), [], empty);
  t.equal(empty.hasBody, false, 'Content-Length: 0 announces no body');
});

t.test('response headers: hop-by-hop and named ones dropped in any case, Date and Content-Length noted', async (t) => {
  const raw = ['Content-Type', 'text/plain', 'DATE', 'x', 'Content-Length', '12', 'Keep-Alive', 'timeout=5', 'Connection', 'X-Gone', 'x-gone', '1', 'X-Request-Id', 'theirs'].map((s) => Buffer.from(s, 'latin1'));
  const out: string[] = [];
  const facts: ResponseHeaderFacts = { hasDate: false, contentLength: -1 };
  copyResponseHeaders(raw, out, new HeaderStrings(responseHeaderKind), facts);
  t.same(out, ['Content-Type', 'text/plain', 'DATE', 'x', 'Content-Length', '12']);
  t.same(facts, { hasDate: true, contentLength: 12 });
});

t.test('response header strings kept per target give the same headers as a new table, whatever changes', async (t) => {
  const strings = new HeaderStrings(responseHeaderKind);
  const bytes = (pairs: string[]) => pairs.map((s) => Buffer.from(s, 'latin1'));
  const responses: string[][] = [];
  for (let i = 0; i < 300; i++) {
    responses.push([
      'Content-Type', i % 3 === 0 ? 'text/plain' : 'application/json',
      'Content-Length', String(i % 7),
      'Date', `Sat, 05 Dec 2026 09:00:${String(i % 60).padStart(2, '0')} GMT`,
      'ETag', `"v${i}"`,
      'Connection', i % 5 === 0 ? 'close, X-Gone' : 'keep-alive',
      'X-Gone', 'hop',
      'X-A', 'a', 'X-B', 'b', `X-N${i % 40}`, String(i),
      'Set-Cookie', 'c='.padEnd(200 + (i % 3), 'x'),
      'X-Caf\u00e9', '\u00e9t\u00e9',
    ]);
  }
  for (const r of responses) {
    const fresh: string[] = [];
    const freshFacts: ResponseHeaderFacts = { hasDate: false, contentLength: -1 };
    // A new table knows no bytes: every name and value is made into a string anew.
    copyResponseHeaders(bytes(r), fresh, new HeaderStrings(responseHeaderKind), freshFacts);
    const kept: string[] = [];
    const keptFacts: ResponseHeaderFacts = { hasDate: false, contentLength: -1 };
    copyResponseHeaders(bytes(r), kept, strings, keptFacts);
    if (JSON.stringify(kept) !== JSON.stringify(fresh) || JSON.stringify(keptFacts) !== JSON.stringify(freshFacts)) {
      t.same(kept, fresh, 'same headers');
      t.same(keptFacts, freshFacts, 'same facts');
      return;
    }
  }
  t.pass('300 responses: identical headers and facts with the kept table and a new one');
  const a = strings.name(Buffer.from('X-A'));
  t.equal(strings.name(Buffer.from('X-A')), a, 'a name seen before is the same object');
  t.equal(a.valueFor(Buffer.from('a')), 'a');
  t.equal(a.valueFor(Buffer.from('b')), 'b', 'a changed value is read anew');
});
