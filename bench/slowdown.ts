/**
 * Bench-only preload (`node --require dist/bench/slowdown.js`): burns BENCH_SLOW_GATEWAY_US
 * microseconds of CPU on the event loop for every HTTP request the process receives. The bench
 * loads it into gateway processes when given --slow-gateway-us=N, to prove that bench:ci fails
 * when the gateway gets slower. It never ships: the gateway's own code knows nothing of it.
 */
import { subscribe } from 'node:diagnostics_channel';

const us = Number(process.env.BENCH_SLOW_GATEWAY_US);
if (!Number.isFinite(us) || us <= 0) throw new Error(`slowdown: BENCH_SLOW_GATEWAY_US must be a positive number, got "${process.env.BENCH_SLOW_GATEWAY_US}"`);
const ns = BigInt(Math.round(us * 1000));

subscribe('http.server.request.start', () => {
  const end = process.hrtime.bigint() + ns;
  while (process.hrtime.bigint() < end);
});
