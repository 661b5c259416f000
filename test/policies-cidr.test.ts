import { BlockList } from 'node:net';
import t from 'tap';
import { CidrSet } from '../src/plugins/policies/cidr';

/** A small deterministic generator, so a failure can be replayed. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s;
  };
}

const RANGES: [string, number][] = [
  ['10.0.0.0', 8],
  ['192.168.1.0', 24],
  ['203.0.113.7', 32],
  ['172.16.0.0', 12],
  ['0.0.0.0', 1],
  ['2001:db8::', 32],
  ['2001:db8:1234:5678::', 64],
  ['fe80::', 10],
  ['::1', 128],
  ['2a00:1450:4001:80b::200e', 127],
  ['::ffff:0:0', 96],
];

function reference(): BlockList {
  const b = new BlockList();
  for (const [a, p] of RANGES) b.addSubnet(a, p, a.includes(':') ? 'ipv6' : 'ipv4');
  return b;
}

t.test('CidrSet agrees with node:net BlockList', async (t) => {
  const set = new CidrSet();
  for (const [a, p] of RANGES) set.add(a, p);
  const ref = reference();
  const check = (ip: string) => ref.check(ip, ip.includes(':') ? 'ipv6' : 'ipv4');
  const fixed = [
    '10.1.2.3', '11.0.0.1', '192.168.1.255', '192.168.2.0', '203.0.113.7', '203.0.113.8', '172.31.255.255', '172.32.0.0',
    '127.0.0.1', '128.0.0.1', '0.0.0.0', '255.255.255.255',
    '2001:db8::1', '2001:DB8:ffff::', '2001:db9::', '2001:db8:1234:5678:abcd::1', 'fe80::1%eth0', 'febf::', 'fec0::',
    '::1', '::2', '::', '2a00:1450:4001:80b::200e', '2a00:1450:4001:80b::200f', '2a00:1450:4001:80b::2010',
    '::ffff:10.9.8.7', '::ffff:127.0.0.1', '::ffff:7f00:1', '::ffff:c0a8:101', '1:2:3:4:5:6:7:8', '1::8', '1:2:3:4:5:6:7::',
    '::1.2.3.4', '64:ff9b::10.1.1.1',
  ];
  for (const ip of fixed) t.equal(set.has(ip), check(ip), ip);
  const next = prng(42);
  let agree = 0;
  const n = 20000;
  for (let i = 0; i < n; i++) {
    const r = next();
    let ip: string;
    if (r % 3 === 0) {
      // IPv4, biased towards the configured ranges.
      const first = [10, 192, 203, 172, 127, next() & 255][next() % 6];
      ip = `${first}.${next() & 255}.${next() & 255}.${next() & 255}`;
    } else {
      const groups = Array.from({ length: 8 }, () => (next() & 0xffff).toString(16));
      if (r % 3 === 1) [groups[0], groups[1]] = ['2001', 'db8'];
      if (next() % 4 === 0) groups.splice(2, 3, '');
      ip = groups.join(':').replace(':::', '::');
    }
    if (set.has(ip) === check(ip)) agree++;
    else t.fail(`disagree on ${ip}`);
  }
  t.equal(agree, n, `${n} random addresses`);
});

t.test('CidrSet refuses what is not an address', async (t) => {
  const set = new CidrSet();
  set.add('0.0.0.0', 0);
  set.add('::', 0);
  for (const bad of ['', 'localhost', '1.2.3', '1.2.3.4.5', '256.1.1.1', '1..2.3', '1:2', ':::', '1:2:3:4:5:6:7:8:9', '1::2::3', 'g::1', '12345::', '1:', ':1', '::1.2.3', '1.2.3.4:80']) {
    t.equal(set.has(bad), false, JSON.stringify(bad));
  }
  t.equal(set.has('1.2.3.4'), true);
  t.equal(set.has('::'), true);
});
