import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { Deadlines, type Timed } from '../src/proxy/deadlines';

function entry(name: string, fired: string[], then?: () => void): Timed {
  return {
    deadlineAt: 0,
    deadlineSlot: -1,
    deadlinePrev: null,
    deadlineNext: null,
    deadlinePassed() {
      fired.push(name);
      then?.();
    },
  };
}

t.test('deadlines fire once when they pass, never when disarmed, and not a turn early', async (t) => {
  const wheel = new Deadlines();
  t.teardown(() => wheel.close());
  const fired: string[] = [];
  const now = performance.now();
  const past = entry('past', fired);
  const soon = entry('soon', fired);
  const disarmed = entry('disarmed', fired);
  const later = entry('later', fired, () => wheel.arm(chained, performance.now() + 20));
  const chained = entry('chained', fired);
  const nextTurn = entry('next-turn', fired);
  wheel.arm(soon, now + 30);
  wheel.arm(disarmed, now + 30);
  wheel.arm(past, now - 5);
  wheel.arm(later, now + 400);
  // The same slot as `soon` one turn of the wheel later (1024 ticks of 10 ms).
  wheel.arm(nextTurn, now + 30 + 10240);
  wheel.disarm(disarmed);
  wheel.disarm(disarmed);

  await sleep(200);
  t.same(fired, ['past', 'soon'], 'the passed deadlines fired, in order; the disarmed one did not');
  t.equal(soon.deadlineSlot, -1, 'a fired entry is no longer armed');
  await sleep(500);
  t.same(fired, ['past', 'soon', 'later', 'chained'], 'a deadline armed by a firing handler fires too');
  t.not(nextTurn.deadlineSlot, -1, 'a deadline a turn away waits in its slot');
  wheel.disarm(nextTurn);
});

t.test('a closed wheel arms nothing', async (t) => {
  const wheel = new Deadlines();
  const fired: string[] = [];
  wheel.close();
  const e = entry('x', fired);
  wheel.arm(e, performance.now());
  await sleep(50);
  t.same(fired, []);
  t.equal(e.deadlineSlot, -1);
});
