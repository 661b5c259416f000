import { parentPort, workerData } from 'node:worker_threads';
import { SharedBuckets } from '../../src/store/shared-buckets';
import type { BucketSpec } from '../../src/store/types';

/** A thread taking `attempts` tokens from the shared table's buckets as fast as it can; posts how many it got. */
const { buffer, keys, attempts, intervalUs, burst } = workerData as {
  buffer: SharedArrayBuffer;
  keys: string[];
  attempts: number;
  intervalUs: number;
  burst: number;
};
const table = new SharedBuckets(buffer);
const spec: BucketSpec = { burst, intervalUs, argInterval: String(intervalUs), argBurst: String(burst) };
const specs = keys.map(() => spec);
let admitted = 0;
// A frozen clock: no token comes back during the run, so the total admitted is exact.
for (let i = 0; i < attempts; i++) if (table.gate(keys, specs, 1e12).admitted) admitted++;
parentPort!.postMessage(admitted);
