import t from 'tap';
import { RequestIds } from '../src/request-ids';

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

t.test('generated request ids are distinct version 4 UUIDs, across batches', async (t) => {
  const ids = new RequestIds();
  const seen = new Set<string>();
  for (let i = 0; i < 1000; i++) {
    const id = ids.generate();
    if (!UUID_V4.test(id)) t.fail(`not a v4 UUID: ${id}`);
    seen.add(id);
  }
  t.equal(seen.size, 1000, 'no id twice');
  const other = new RequestIds();
  t.notOk(seen.has(other.generate()), 'another instance makes its own');
  // Every hex digit position varies (the random bits are used, not a constant).
  const sample = [...seen];
  for (const pos of [0, 9, 15, 20, 35]) t.ok(new Set(sample.map((s) => s[pos])).size > 4, `position ${pos} varies`);
});

t.test("a client's sane id is kept, anything else replaced", async (t) => {
  const ids = new RequestIds();
  t.equal(ids.for('abc-123_X.y'), 'abc-123_X.y');
  for (const bad of ['', 'has space', 'x'.repeat(129), 'semi;colon', ['a', 'b'], undefined]) t.match(ids.for(bad), UUID_V4, JSON.stringify(bad));
});
