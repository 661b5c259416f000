/**
 * Node flags every way of starting the gateway passes (the `gateway` bin's shebang, `npm start`, the
 * Dockerfile, the demo and the bench; keep them in step).
 *
 * --max-semi-space-size=64: a young generation of 64 MiB per semi-space instead of 16. The objects
 * of the requests in flight are live at every scavenge; with a small young generation they are
 * copied and promoted, and the old generation then needs frequent full collections. Measured on the
 * bare route (interleaved, quiet 2-core machine): 89-92 -> 79-82 us of CPU per request. The
 * @fastify/http-proxy reference measured no gain from it (107 vs 109 us), so the bench runs it
 * without.
 */
export const NODE_FLAGS: readonly string[] = ['--max-semi-space-size=64'];
