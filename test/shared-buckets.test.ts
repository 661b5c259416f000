import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import t from 'tap';
import { MemoryCache } from '../src/store/memory-cache';
import { MemoryStore } from '../src/store/memory';
import { SharedBuckets, SharedMemoryStore } from '../src/store/shared-buckets';
import type { BucketSpec } from '../src/store/types';

const spec = (rate: number, perUs: number, burst = rate): BucketSpec => {
  const intervalUs = Math.round(perUs / rate);
  return { burst, intervalUs, argInterval: String(intervalUs), argBurst: String(burst) };
};

t.test('the shared table answers exactly as the single-process store, field for field', async (t) => {
  let now = 1e9;
  const single = new MemoryStore(10000, () => now);
  const shared = new SharedMemoryStore(SharedBuckets.allocate(10000), new MemoryCache(1024), () => now);
  const specs = [spec(5, 1e6, 5), spec(20, 60e6, 3), spec(1, 1e3, 2)];
  // A deterministic pseudo-random walk over keys, bucket sets and time.
  let seed = 42;
  const rand = (n: number) => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed % n;
  };
  let differences = 0;
  for (let i = 0; i < 20000; i++) {
    const n = 1 + rand(3);
    const keys = Array.from({ length: n }, (_, j) => `k${rand(50)}:${j}`);
    const req = { keys, specs: specs.slice(0, n) };
    const a = single.gate(req);
    const b = shared.gate(req);
    if (a.admitted !== b.admitted || JSON.stringify(a.buckets) !== JSON.stringify(b.buckets)) differences++;
    now += rand(400_000);
  }
  t.equal(differences, 0, 'same verdicts and the same remaining/retry/next/reset on 20000 decisions');
});

t.test('all or nothing: a request refused by one bucket takes no token from the others', async (t) => {
  const table = new SharedBuckets(SharedBuckets.allocate(100));
  const now = 1e9;
  const s1 = spec(1, 60e6, 1);
  const s5 = spec(5, 60e6, 5);
  t.equal(table.gate(['tight'], [s1], now).admitted, true);
  t.equal(table.gate(['wide', 'tight'], [s5, s1], now).admitted, false);
  t.equal(table.gate(['wide'], [s5], now).buckets[0], 4, 'the refused request left "wide" untouched: 4 left after this one');
});

t.test('a flood of distinct keys keeps a bucket in use and stays within the buffer', async (t) => {
  const buffer = SharedBuckets.allocate(1000);
  const table = new SharedBuckets(buffer);
  let now = 1e9;
  const hourly = [spec(1, 3600e6)];
  t.equal(table.gate(['hot'], hourly, now).admitted, true);
  let hotRefused = 0;
  for (let i = 0; i < 100000; i++) {
    table.gate([`flood${i}`], [spec(1, 1e3)], now);
    if (i % 100 === 0 && !table.gate(['hot'], hourly, now).admitted) hotRefused++;
    now += 10;
  }
  t.equal(hotRefused, 1000, 'the hot key stayed empty: short-lived flood buckets are reused before it is dropped');
  t.ok(buffer.byteLength < 1000 * 64, `bounded memory (${buffer.byteLength} bytes for 1000 keys)`);
});

t.test('worker threads racing on one bucket admit exactly its burst', async (t) => {
  const buffer = SharedBuckets.allocate(10000);
  const run = (keys: string[], burst: number, attempts: number, threads: number) =>
    Promise.all(
      Array.from(
        { length: threads },
        () =>
          new Promise<number>((resolve, reject) => {
            const w = new Worker(join(__dirname, 'helpers', 'bucket-worker.ts'), { workerData: { buffer, keys, attempts, intervalUs: 3600e6, burst } });
            w.once('message', resolve);
            w.once('error', reject);
          }),
      ),
    ).then((counts) => counts.reduce((a, b) => a + b, 0));
  t.equal(await run(['one'], 1000, 20000, 4), 1000, '4 threads × 20000 attempts on a burst of 1000: exactly 1000');
  // Two buckets per request, in different stripes, locked in one order by every thread.
  t.equal(await run(['a', 'b', 'c'], 500, 5000, 4), 500, 'three buckets per request: exactly 500');
});
