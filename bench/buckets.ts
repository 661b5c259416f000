import { MemoryStore } from '../src/store/memory';
import { SharedBuckets, SharedMemoryStore, sharedClock } from '../src/store/shared-buckets';
import { MemoryCache } from '../src/store/memory-cache';
import type { BucketSpec, GateRequest } from '../src/store/types';

/**
 * The cost of one rate-limit decision in the memory store: the single-process Map store against the
 * workers' shared table (hashing the key, locking its stripe, GCRA, unlocking), one thread, keys
 * spread over `--keys` buckets, on the real shared clock, in CPU time. The issue's target: under 1 µs.
 *   npm run bench:buckets -- [--decisions=2000000] [--keys=1000]
 */
const args = Object.fromEntries(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=')));
const decisions = Number(args.decisions ?? 2_000_000);
const keyCount = Number(args.keys ?? 1000);
const spec: BucketSpec = { burst: 1e9, intervalUs: 1, argInterval: '1', argBurst: '1000000000' };
const requests: GateRequest[] = Array.from({ length: keyCount }, (_, i) => ({ keys: [`rl:{users}:ip:10.0.${i >> 8}.${i & 255}`], specs: [spec] }));

function measure(name: string, gate: (r: GateRequest) => unknown): number {
  for (let i = 0; i < 200_000; i++) gate(requests[i % keyCount]);
  // CPU time, not wall time: on a shared machine the wall clock also counts other processes' turns.
  const start = process.cpuUsage();
  for (let i = 0; i < decisions; i++) gate(requests[i % keyCount]);
  const used = process.cpuUsage(start);
  const ns = ((used.user + used.system) * 1000) / decisions;
  process.stdout.write(`${name.padEnd(34)} ${ns.toFixed(0).padStart(5)} ns of CPU per decision\n`);
  return ns;
}

const single = new MemoryStore(100000);
const shared = new SharedMemoryStore(SharedBuckets.allocate(100000), new MemoryCache(1024), sharedClock());
for (let round = 0; round < 3; round++) {
  measure('memory store (one process)', (r) => single.gate(r));
  measure('shared table (workers)', (r) => shared.gate(r));
}
