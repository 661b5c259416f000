import { performance } from 'node:perf_hooks';

/** Resolution of the wheel: a deadline is noticed at most this long after it passed. */
const TICK_MS = 10;
/** Slots of the wheel (a power of two): one turn covers SLOTS × TICK_MS; later deadlines wait turns. */
const SLOTS = 1024;

/**
 * What the wheel holds: the relay's handler. The links live on the entry itself, so arming a
 * deadline allocates nothing.
 */
export interface Timed {
  /** performance.now() at which the deadline passes. */
  deadlineAt: number;
  /** Slot in the wheel, or -1 when not armed. */
  deadlineSlot: number;
  deadlinePrev: Timed | null;
  deadlineNext: Timed | null;
  deadlinePassed(): void;
}

/**
 * The request deadlines of one upstream, in a timing wheel with one interval timer. A Node timer per
 * request cost an object, a clock read and list bookkeeping on every request (the deadline almost
 * never passes); here arming and disarming are a few pointer writes. The timer runs only while
 * deadlines are armed.
 */
export class Deadlines {
  private readonly slots: (Timed | null)[] = new Array<Timed | null>(SLOTS).fill(null);
  private armed = 0;
  /** The last tick whose slot was swept. */
  private swept = 0;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;

  arm(entry: Timed, at: number): void {
    if (this.closed) return;
    if (this.timer === null) this.start();
    // A tick already swept comes round again only after a whole turn: due now, so the next one.
    const tick = Math.max(Math.ceil(at / TICK_MS), this.swept + 1);
    const slot = tick & (SLOTS - 1);
    const head = this.slots[slot];
    entry.deadlineAt = at;
    entry.deadlineSlot = slot;
    entry.deadlinePrev = null;
    entry.deadlineNext = head;
    if (head !== null) head.deadlinePrev = entry;
    this.slots[slot] = entry;
    this.armed++;
  }

  disarm(entry: Timed): void {
    if (entry.deadlineSlot < 0) return;
    const { deadlinePrev: prev, deadlineNext: next } = entry;
    if (prev !== null) prev.deadlineNext = next;
    else this.slots[entry.deadlineSlot] = next;
    if (next !== null) next.deadlinePrev = prev;
    entry.deadlineSlot = -1;
    entry.deadlinePrev = null;
    entry.deadlineNext = null;
    this.armed--;
  }

  close(): void {
    this.closed = true;
    this.stop();
  }

  private start(): void {
    this.swept = Math.floor(performance.now() / TICK_MS);
    this.timer = setInterval(sweep, TICK_MS, this);
    // In-flight requests keep the process alive by their sockets; the wheel alone must not.
    this.timer.unref();
  }

  private stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  /** Fires what has passed in the slots from the last swept tick to now. */
  sweep(): void {
    if (this.armed === 0) return this.stop();
    const now = performance.now();
    const until = Math.floor(now / TICK_MS);
    // After a stall longer than a turn, one pass over every slot finds everything due.
    const from = Math.max(this.swept + 1, until - SLOTS + 1);
    let due: Timed[] | null = null;
    for (let tick = from; tick <= until; tick++) {
      let entry = this.slots[tick & (SLOTS - 1)];
      while (entry !== null) {
        const next = entry.deadlineNext;
        if (entry.deadlineAt <= now) {
          this.disarm(entry);
          (due ??= []).push(entry);
        }
        entry = next;
      }
    }
    this.swept = until;
    // Fired after the sweep: a handler that stops may arm or disarm other entries.
    if (due !== null) for (const entry of due) entry.deadlinePassed();
  }
}

function sweep(wheel: Deadlines): void {
  wheel.sweep();
}
