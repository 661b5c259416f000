import { BUCKET_FIELDS, F_NEXT_MS, F_REMAINING, F_RESET_MS, F_RETRY_MS, type GateRequest, type GateResult } from './types';

/**
 * The GCRA arithmetic of the in-process stores (the memory store and the workers' shared table);
 * lua/gate.lua does the same in Redis: keep the three in step. A bucket's state is the time at which
 * it is full again; its debt is how far that lies ahead (0: full). Each request costs `intervalUs`
 * of debt, and a bucket holds at most `burst` requests' worth.
 */

/**
 * Fills the result fields of one bucket from its debt `d` (microseconds until the bucket is full).
 */
function bucketFields(out: number[], at: number, d: number, intervalUs: number, capUs: number, retryUs: number): void {
  out[at + F_REMAINING] = Math.floor((capUs - d) / intervalUs);
  out[at + F_RETRY_MS] = Math.ceil(retryUs / 1000);
  const part = d % intervalUs;
  out[at + F_NEXT_MS] = d === 0 ? 0 : Math.ceil((part === 0 ? intervalUs : part) / 1000);
  out[at + F_RESET_MS] = Math.ceil(d / 1000);
}

/**
 * The verdict on one request over the `n` buckets of `specs`, whose debts the store read into
 * `debts`: every bucket takes a token, or none does. On admission a bucket's new state is now +
 * debts[i] + specs[i].intervalUs; the store writes it.
 */
export function gcraDecide(debts: ArrayLike<number>, n: number, specs: GateRequest['specs']): GateResult {
  const out: number[] = new Array<number>(n * BUCKET_FIELDS);
  let admitted = true;
  for (let i = 0; i < n; i++) if (debts[i] + specs[i].intervalUs > specs[i].burst * specs[i].intervalUs) admitted = false;
  for (let i = 0; i < n; i++) {
    const { intervalUs, burst } = specs[i];
    const capUs = burst * intervalUs;
    let d = debts[i];
    let retry = 0;
    if (admitted) d += intervalUs;
    else if (d + intervalUs > capUs) retry = d + intervalUs - capUs;
    bucketFields(out, i * BUCKET_FIELDS, d, intervalUs, capUs, retry);
  }
  return { admitted, buckets: out };
}
