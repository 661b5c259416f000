/** Buckets per window: the window slides in steps of windowMs / BUCKETS. */
const BUCKETS = 10;

/**
 * Two event counts (say requests and failures) over a sliding time window, kept in a ring of
 * buckets with running sums: adding and reading are O(1) and allocate nothing, so the relay can
 * call them on every request.
 */
export class RollingCounts {
  private readonly a = new Uint32Array(BUCKETS);
  private readonly b = new Uint32Array(BUCKETS);
  private readonly bucketMs: number;
  private head = 0;
  /** Bucket number (time / bucketMs) the head slot stands for. */
  private epoch = 0;
  private sumA = 0;
  private sumB = 0;

  constructor(windowMs: number) {
    this.bucketMs = windowMs / BUCKETS;
  }

  /** Events of the first kind in the window, as of the last add. */
  get totalA(): number {
    return this.sumA;
  }

  get totalB(): number {
    return this.sumB;
  }

  /** Moves the head to the bucket of `now` (a performance.now() time), emptying the buckets passed. */
  advance(now: number): void {
    const epoch = Math.floor(now / this.bucketMs);
    if (epoch <= this.epoch) return;
    const steps = Math.min(epoch - this.epoch, BUCKETS);
    for (let i = 0; i < steps; i++) {
      this.head = this.head + 1 === BUCKETS ? 0 : this.head + 1;
      this.sumA -= this.a[this.head];
      this.sumB -= this.b[this.head];
      this.a[this.head] = 0;
      this.b[this.head] = 0;
    }
    this.epoch = epoch;
  }

  addA(now: number): void {
    this.advance(now);
    this.a[this.head]++;
    this.sumA++;
  }

  addB(now: number): void {
    this.advance(now);
    this.b[this.head]++;
    this.sumB++;
  }

  clear(): void {
    this.a.fill(0);
    this.b.fill(0);
    this.sumA = 0;
    this.sumB = 0;
  }
}
