import t from 'tap';
import { retryAfterMs } from '../src/observability/otlp-exporter';
import { startGateway, type TestGateway } from './helpers/gateway';
import { call } from './helpers/http';
import { metricValue } from './helpers/metrics';
import { startOtlpReceiver, type OtlpReceiver, type RefusalAnswer } from './helpers/otlp';
import { startUpstream } from './helpers/upstream';

/** A gateway whose one route is traced at every request, exporting each span as soon as it ends. */
async function tracedGateway(
  t: { teardown(fn: () => Promise<void>): void },
  refusals: RefusalAnswer[],
  timeoutMs = 2000,
): Promise<{ gw: TestGateway; otlp: OtlpReceiver }> {
  const otlp = await startOtlpReceiver({ refusals });
  const up = await startUpstream();
  const gw = await startGateway({
    upstreams: { svc: { targets: [up.url] } },
    routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'svc' }],
    tracing: { enabled: true, endpoint: otlp.url, headers: { 'x-api-key': 'k' }, export: { scheduledDelayMs: 20, maxExportBatchSize: 1, timeoutMs } },
  });
  t.teardown(async () => {
    await gw.close();
    await up.close();
    await otlp.close();
  });
  return { gw, otlp };
}

/** Waits until the gateway has counted `n` spans dropped for `reason` (within 5 s); returns the count. */
async function droppedAtLeast(gw: TestGateway, reason: string, n: number): Promise<number> {
  let count = 0;
  for (let i = 0; i < 100 && count < n; i++) {
    count = await metricValue(gw.adminUrl, 'gateway_tracing_spans_dropped_total', { reason });
    if (count < n) await new Promise((r) => setTimeout(r, 50));
  }
  return count;
}

t.test('a collector answering 503 is asked again, at once when Retry-After says 0: the spans arrive and none is dropped', async (t) => {
  const { gw, otlp } = await tracedGateway(t, [{ status: 503, headers: { 'retry-after': '0' } }]);
  t.equal((await call(gw.url, '/a')).status, 200);
  const spans = await otlp.waitForSpans(2);
  t.equal(spans.length, 2, 'the server span and the client span');
  t.equal(otlp.requests.length, 3, 'two exports, one of them sent twice');
  const first = otlp.requests[0];
  t.equal(first.contentType, 'application/x-protobuf');
  t.equal(first.headers['x-api-key'], 'k', 'the configured headers');
  t.match(first.headers['user-agent'], /^api-gateway\/\S+ \(OTLP\/HTTP protobuf\)$/);
  t.equal(await metricValue(gw.adminUrl, 'gateway_tracing_spans_exported_total'), 2);
  t.equal(await metricValue(gw.adminUrl, 'gateway_tracing_spans_dropped_total', { reason: 'export_failed' }), 0);
});

t.test('a Retry-After beyond the export budget ends the export at once: its spans are counted as failed, not retried', async (t) => {
  const busy = { status: 429, headers: { 'retry-after': '30' } };
  const { gw, otlp } = await tracedGateway(t, [busy, busy, busy, busy], 2000);
  const started = performance.now();
  t.equal((await call(gw.url, '/a')).status, 200);
  t.equal(await droppedAtLeast(gw, 'export_failed', 2), 2, 'both spans');
  const took = performance.now() - started;
  t.ok(took < 1500, `given up without waiting out the budget (${Math.round(took)} ms)`);
  await new Promise((r) => setTimeout(r, 200));
  t.equal(otlp.requests.length, 2, 'one request per export');
});

t.test('a collector refusing the data (400) is not asked again', async (t) => {
  const bad = { status: 400 };
  const { gw, otlp } = await tracedGateway(t, [bad, bad, bad, bad]);
  t.equal((await call(gw.url, '/a')).status, 200);
  t.equal(await droppedAtLeast(gw, 'export_failed', 2), 2);
  await new Promise((r) => setTimeout(r, 200));
  t.equal(otlp.requests.length, 2, 'one request per export');
  t.equal(await metricValue(gw.adminUrl, 'gateway_tracing_spans_exported_total'), 0);
});

t.test('Retry-After: delay seconds or an HTTP date, anything else ignored', async (t) => {
  const now = Date.parse('2026-12-06T10:00:00Z');
  t.equal(retryAfterMs('3', now), 3000);
  t.equal(retryAfterMs(' 0 ', now), 0);
  t.equal(retryAfterMs(['2', '9'], now), 2000, 'the first of repeated headers');
  t.equal(retryAfterMs('Sun, 06 Dec 2026 10:00:10 GMT', now), 10000);
  t.equal(retryAfterMs('Sun, 06 Dec 2026 09:00:00 GMT', now), 0, 'a date past means now');
  t.equal(retryAfterMs('soon', now), undefined);
  t.equal(retryAfterMs('-5', now), undefined);
  t.equal(retryAfterMs('', now), undefined);
  t.equal(retryAfterMs(undefined, now), undefined);
});
